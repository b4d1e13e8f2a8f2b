"""`batch.finished` events: one each time a batch's last unfinished job ends, with the
batch's jobs per status, written by the housekeeping (`jobs.housekeeping`), never by a
transition: a job's state change costs nothing more.

The sweep reads the job events written since its last run (a range of the primary key,
up to the feed's settled point, so no event is passed over while its transaction is
still open), takes the batches that had a job end in that range, and writes
`batch.finished` for those that have no unfinished job left and no job event after the
range (a later change is looked at by the next run, so a batch is never announced
twice for one ending). One run at a time: it holds the FeedState row's lock, and moves
`finished_through` in the same transaction as the events it writes.
"""

from typing import Any

from django.db import transaction
from django.db.models import Max

from batches.models import Batch
from jobs.counts import status_counts_of_batches
from jobs.feed import feed_state_for_update, settled_id
from jobs.models import Job, JobEvent
from jobs.statuses import TERMINAL, UNFINISHED

# Job events looked at per run at most (a backlog is caught up over several runs).
RANGE = 50_000


def record_finished_batches(*, limit: int = RANGE) -> int:
    """Write the `batch.finished` events due (see the module) for up to `limit` job
    events since the last run; returns how many were written."""
    settled = settled_id()
    with transaction.atomic():
        # The lock comes first: this transaction holds a transaction id before it draws
        # event ids (jobs.feed relies on it).
        state = feed_state_for_update()
        upper = settled if settled is not None else JobEvent.objects.aggregate(top=Max("id"))["top"]
        if upper is None or upper <= state.finished_through:
            return 0
        upper = min(upper, state.finished_through + limit)
        ended = (
            JobEvent.objects.filter(id__gt=state.finished_through, id__lte=upper, to_status__in=TERMINAL, job__isnull=False)
            .order_by()
            .values_list("batch_id", "owner_id")
            .annotate(last=Max("time"))
        )
        candidates: dict[Any, tuple[Any, Any]] = {batch_id: (owner_id, last) for batch_id, owner_id, last in ended}
        finished = _finished(candidates, upper=upper)
        counts = status_counts_of_batches(batch_ids=finished) if finished else {}
        JobEvent.objects.bulk_create(
            JobEvent(
                job=None,
                batch_id=batch_id,
                owner_id=candidates[batch_id][0],
                time=candidates[batch_id][1],
                counts=counts[batch_id],
            )
            for batch_id in finished
        )
        type(state).objects.filter(pk=state.pk).update(finished_through=upper)
    return len(finished)


def _finished(candidates: dict[Any, tuple[Any, Any]], *, upper: int) -> list[Any]:
    """The batches of `candidates` (batch id -> (owner id, time)) that exist, have no
    unfinished job and no job event after `upper`, in id order."""
    if not candidates:
        return []
    ids = list(Batch.objects.filter(pk__in=list(candidates), deleted_at__isnull=True).values_list("pk", flat=True))
    unfinished = set(Job.objects.filter(batch_id__in=ids, status__in=UNFINISHED).order_by().values_list("batch_id", flat=True).distinct())
    done = sorted(batch_id for batch_id in ids if batch_id not in unfinished)
    return [
        batch_id
        for batch_id in done
        if not JobEvent.objects.filter(owner_id=candidates[batch_id][0], id__gt=upper, batch_id=batch_id, job__isnull=False).exists()
    ]
