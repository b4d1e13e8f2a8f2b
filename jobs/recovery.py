"""Recovering from lost workers. A worker whose lease has run out (`jobs.leases`) is
declared LOST by any other, and the live attempts that die with it end as `worker
lost` (recorded as any end is, `jobs.recording.record_outcomes`); the attempts of an
executor that outlive their worker (a cluster's) are adopted by the next worker of that
executor instead. A worker that loses the database itself ends its attempts as
`LOST_CONTACT`, uncharged.
"""

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core import reason_codes
from jobs import attempts as attempt_rows
from jobs.executors.base import LiveAttempt, Outcome
from jobs.models import Attempt, Job, Worker
from jobs.recording import record_outcomes
from jobs.statuses import LIVE

WORKER_LOST = "worker lost"
LOST_CONTACT = "worker lost contact with the database"


def recover_lost_workers(*, now: Any = None) -> int:
    """Declare LOST every ACTIVE worker whose lease has run out. The live attempts of a
    lost worker whose attempts die with it (local processes, killed by its fence) end
    as `worker lost`: their jobs are retried if they have attempts left, else FAILED
    (or FAILED `Cancelled by user` if a cancel was asked for). The attempts of a worker
    that `keeps_attempts` stay live, for the next worker of its executor to adopt. Safe
    to run from many workers at once (each lost worker is claimed by one conditional
    update). Returns how many jobs were recovered."""
    now = now or timezone.now()
    recovered = 0
    for lost in Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__lt=now):
        with transaction.atomic():
            claimed = Worker.objects.filter(pk=lost.pk, state=Worker.State.ACTIVE, lease_expires__lt=now).update(
                state=Worker.State.LOST, stopped_at=now
            )
            if claimed and not lost.keeps_attempts:
                live = Job.objects.filter(worker=lost, status__in=LIVE).order_by().values_list("pk", "attempts")
                outcomes = [
                    Outcome(str(pk), number, succeeded=False, reason=WORKER_LOST, reason_code=reason_codes.WORKER_LOST)
                    for pk, number in live
                ]
                recovered += record_outcomes(worker=lost, outcomes=outcomes, now=now) if outcomes else 0
    return recovered


def adopt_attempts(*, worker: Worker) -> list[LiveAttempt]:
    """Take over the live attempts that stopped or lost workers of `worker`'s executor
    left behind (for executors whose attempts outlive their worker): they become this
    worker's, and are returned for the executor to follow."""
    orphans = list(
        Attempt.objects.filter(end_time__isnull=True, executor=worker.executor)
        .filter(Q(worker__isnull=True) | ~Q(worker__state=Worker.State.ACTIVE))
        .select_related("job__batch")
        .order_by("job_id")[:10_000]
    )
    moved = attempt_rows.reassign(attempts=orphans, to=worker)
    return [
        LiveAttempt(
            job_id=str(a.job_id),
            attempt=a.number,
            log_id=str(a.job.log_id),
            external_id=a.external_id,
            timeout_seconds=a.job.batch.timeout_seconds,
            memory_mib=a.job.batch.memory,
            cpu=a.job.batch.cpu,
            running=a.state == Attempt.State.RUNNING,
        )
        for a in moved
    ]
