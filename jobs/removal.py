"""Deleting batches: gone from their owner's view at once, their rows and logs removed in
bounded chunks afterwards; and `cleanup`'s choice of finished batches."""

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from batches.models import Batch
from jobs.logs import delete_logs
from jobs.models import Attempt, Job, JobEvent
from jobs.statuses import UNFINISHED
from jobs.wakeup import notify_work

# cleanup deletes this many batches per transaction.
_CLEANUP_SLICE = 100


# Jobs removed per transaction when purging deleted batches.
PURGE_CHUNK = 5000


def delete_batches(*, batches: QuerySet[Batch], chunk: int = PURGE_CHUNK) -> int:
    """Delete `batches`: they leave their owner's view at once (one UPDATE, whatever
    their size), their running attempts are stopped by their workers, and their jobs,
    attempts, events and logs are removed in bounded chunks (`purge_deleted_batches`):
    here up to one chunk of `chunk` jobs, so a small batch is gone when this returns
    (but for rows a worker is writing at that moment, which the purge passes by); the
    rest by the housekeeping sweeps (`jobs.housekeeping`) and `cleanup`, resumable
    after any crash. Callers scope `batches` to a user; this function never widens it.
    Returns batches deleted."""
    batch_ids = list(batches.filter(deleted_at__isnull=True).values_list("pk", flat=True))
    if not batch_ids:
        return 0
    with transaction.atomic():
        Batch.objects.filter(pk__in=batch_ids, deleted_at__isnull=True).update(deleted_at=timezone.now())
        notify_work()  # workers look at their attempts now
    purge_deleted_batches(budget=chunk, chunk=chunk)
    return len(batch_ids)


def purge_deleted_batches(*, budget: int = PURGE_CHUNK, chunk: int = PURGE_CHUNK) -> int:
    """Remove up to about `budget` jobs (with their attempts, events and log files) of
    deleted batches, oldest deletion first, `chunk` per transaction; a batch row goes
    with its last job. Returns jobs this call removed (0: nothing left to do, or what is
    left is being removed by another call right now).

    Each chunk locks the job rows it takes (FOR UPDATE SKIP LOCKED on PostgreSQL): rows
    a worker is recording a change to, or another purge is removing, are left for a
    later chunk. So an event or attempt a worker wrote before is committed and removed
    with the rest, a worker that comes after finds no job to write about, and two
    purges at once (a request's and the sweeper's) neither wait for each other nor
    count the same rows. Log files are removed once their chunk has committed."""
    removed = 0
    while removed < budget:
        batch_id = Batch.objects.filter(deleted_at__isnull=False).order_by("deleted_at", "id").values_list("pk", flat=True).first()
        if batch_id is None:
            return removed
        deleted = _purge_chunk(batch_id=batch_id, size=min(chunk, budget - removed))
        if deleted is None:
            return removed  # its remaining rows are locked by others: a later call's
        removed += deleted
    return removed


def _purge_chunk(*, batch_id: Any, size: int) -> int | None:
    """Remove up to `size` of the batch's jobs, or the batch row once it has none.
    Returns the jobs this call deleted (its DELETE's own count), or None if every job
    left is locked by another transaction."""
    with transaction.atomic():
        ids = list(
            Job.objects.filter(batch_id=batch_id)
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            if Job.objects.filter(batch_id=batch_id).exists():
                return None
            Batch.objects.filter(pk=batch_id).delete()
            return 0
        jobs = Job.objects.filter(pk__in=ids)
        # Only jobs that have started have a log.
        log_ids = list(jobs.filter(attempts__gt=0).values_list("log_id", flat=True))
        # Events and attempts first (DO_NOTHING on their job), then the jobs: with no
        # cascade or signal to follow, each delete() is one DELETE statement.
        JobEvent.objects.filter(job_id__in=ids).delete()
        Attempt.objects.filter(job_id__in=ids).delete()
        _, per_model = jobs.delete()
        transaction.on_commit(lambda: delete_logs(log_ids=log_ids))
    return per_model.get(Job._meta.label, 0)


def finished_batches(*, older_than: timedelta, now: datetime | None = None, owner: AbstractBaseUser | None = None) -> QuerySet[Batch]:
    """Batches, of `owner` or of every user, whose jobs have all finished (SUCCEEDED or
    FAILED) and that saw no activity (submission or a job ending) for `older_than`."""
    cutoff = (now or timezone.now()) - older_than
    batches = Batch.objects.filter(create_time__lt=cutoff, deleted_at__isnull=True)
    if owner is not None:
        batches = batches.filter(owner=owner)
    return batches.exclude(jobs__status__in=UNFINISHED).exclude(jobs__stop_time__gte=cutoff).order_by("id")


def cleanup_batches(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    now: datetime | None = None,
    owner: AbstractBaseUser | None = None,
    chunk: int = PURGE_CHUNK,
) -> tuple[int, int]:
    """Delete the `finished_batches()` (of `owner`, or of everyone), then remove every
    deleted batch's rows and logs (these and any whose deletion a crash left
    unfinished), `chunk` jobs per transaction.

    Returns (batches, jobs) deleted, or that would be with `dry_run`."""
    batches = finished_batches(older_than=older_than, now=now, owner=owner)
    if dry_run:
        return batches.count(), sum(batches.values_list("n_jobs", flat=True))
    deleted_batches = deleted_jobs = 0
    while some := list(batches.values_list("pk", "n_jobs")[:_CLEANUP_SLICE]):
        deleted_batches += delete_batches(batches=Batch.objects.filter(pk__in=[pk for pk, _ in some]), chunk=chunk)
        deleted_jobs += sum(n for _, n in some)
    while purge_deleted_batches(budget=chunk * 10, chunk=chunk):
        pass
    return deleted_batches, deleted_jobs
