"""Reads of jobs: a user's, always through a batch the caller owns (`get_user_job`...);
the operator's views of the whole table and of the workers (counts, the oldest waiting
job, live workers); and the query of which jobs hold a live attempt
(`has_live_attempt`, `holding_an_attempt`), which cancels and the dispatcher filter on."""

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from batches.models import Batch
from jobs.models import Attempt, Job, JobEvent, Worker
from jobs.statuses import LIVE, QUEUED, Status


def has_live_attempt() -> Exists:
    """True for a job with a live attempt row (started, or waiting in a cluster's queue)."""

    return Exists(Attempt.objects.filter(job=OuterRef("pk"), end_time__isnull=True))


def holding_an_attempt() -> Q:
    """Jobs whose attempt must stop before they can end: STARTING, RUNNING, or RUNNABLE
    while the attempt waits in a cluster's queue."""
    return Q(status__in=LIVE) | Q(status=Status.RUNNABLE) & has_live_attempt()


def batch_jobs(*, batch_id: Any) -> QuerySet:
    """Jobs of one batch as rows of plain values (what the job list shows; model
    instances cost more than the query); the caller has already checked the batch is
    the user's."""
    # The arguments as their JSON text, parsed by orjson in the serializer: the JSON
    # field's own json.loads per row cost more than the page's query.
    return Job.objects.filter(batch_id=batch_id).values("id", "index", "log_id", "status", "reason", args_json=Cast("args", TextField()))


def jobs_of_kept_batches() -> QuerySet[Job]:
    """Every job but those of deleted batches (their rows go in chunks after the delete,
    and are no one's to see meanwhile): NOT IN the small, partially indexed set of
    deleted batches, not a join (joined, a worker's jobs in the admin took 230 ms instead
    of 80 at a million jobs)."""
    return Job.objects.exclude(batch__in=Batch.objects.filter(deleted_at__isnull=False))


def _user_jobs(user: AbstractBaseUser) -> QuerySet[Job]:
    """The caller's jobs: those of their undeleted batches."""
    return Job.objects.filter(batch__owner=user, batch__deleted_at__isnull=True)


def get_user_job(*, user: AbstractBaseUser, batch_id: Any, job_id: Any) -> Job | None:
    """One job of the caller's, with its batch (one query)."""
    return _user_jobs(user).filter(pk=job_id, batch_id=batch_id).select_related("batch").first()


def get_user_job_by_id(*, user: AbstractBaseUser, job_id: Any) -> Job | None:
    """One job of the caller's by its id alone, with its batch (one query)."""
    return _user_jobs(user).filter(pk=job_id).select_related("batch").first()


def get_user_job_by_log(*, user: AbstractBaseUser, log_id: Any) -> Job | None:
    return _user_jobs(user).filter(log_id=log_id).first()


def job_events(*, job: Job) -> QuerySet[JobEvent]:
    return JobEvent.objects.filter(job=job)


# What an attempt used, as JobDetail's `usage` shows it.
USAGE_FIELDS = ("max_rss_mib", "cpu_seconds", "elapsed_seconds")


def job_attempts(*, job: Job) -> QuerySet[Attempt]:
    """The job's attempts, first to last (the caller has checked the job is the user's)."""
    return Attempt.objects.filter(job=job).order_by("number")


def last_ended_attempt(*, job: Job) -> dict[str, Any] | None:
    """The usage figures and signal of the job's last ended attempt, None before any
    ended (no query for a job that never started one)."""
    if not job.attempts:
        return None
    ended = Attempt.objects.filter(job=job, end_time__isnull=False).order_by("-number")
    return ended.values("signal", *USAGE_FIELDS).first()


def last_ended_attempts(*, job_ids: list[Any]) -> dict[Any, Attempt]:
    """Job id -> its last ended attempt's figures (USAGE_FIELDS, what it had), for the
    jobs of one page: one query whatever their number, each attempt found on the
    (job, number) index; jobs with no ended attempt are left out."""
    later = Attempt.objects.filter(job_id=OuterRef("job_id"), number__gt=OuterRef("number"), end_time__isnull=False)
    ended = Attempt.objects.filter(job_id__in=job_ids, end_time__isnull=False).exclude(Exists(later)).order_by()
    return {attempt.job_id: attempt for attempt in ended.only("job_id", "number", "memory_mib", "cpus", *USAGE_FIELDS)}


def live_worker_reports() -> list[tuple[str, dict[str, bool]]]:
    """(name, isolation report) of every live worker."""
    live = Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__gt=timezone.now())
    return [(name, report or {}) for name, report in live.values_list("name", "isolation")]


def combined_isolation(reports: list[tuple[str, dict[str, bool]]]) -> dict[str, bool]:
    """For each isolation part, whether every worker of `reports` (live_worker_reports)
    that reports it has it in force (a Slurm worker reports what the cluster enforces)."""
    parts: dict[str, bool] = {}
    for _, report in reports:
        for part, in_force in report.items():
            parts[part] = parts.get(part, True) and bool(in_force)
    return parts


def jobs_per_state() -> dict[str, int]:
    """Every state's job count, the whole table (one GROUP BY on the status index)."""
    counts = dict.fromkeys(Status.values, 0)
    counts.update(Job.objects.order_by().values_list("status").annotate(n=Count("*")))
    return counts


def oldest_waiting_since() -> datetime | None:
    """When the oldest job still waiting to run (SUBMITTED, PENDING, RUNNABLE) was
    created, or None. A job is created with its batch and batch ids grow with time: the
    oldest waiting job is in the smallest batch id of each waiting state, the first entry
    of the (status, batch, id) index for that state: a few index look-ups, whatever the
    backlog."""
    oldest = None
    for status in QUEUED:
        waiting = jobs_of_kept_batches().filter(status=status)
        for created in waiting.order_by("batch_id").values_list("batch__create_time", flat=True)[:1]:
            oldest = created if oldest is None else min(oldest, created)
    return oldest


def state_counts_by_batch() -> dict[tuple[Any, str], int]:
    """(batch id, state) -> jobs, for every batch and state that has jobs: one ordered
    walk of the (batch, status) index, which gives the whole table's counts per state
    and each batch's unfinished jobs at once (two GROUP BYs read it twice)."""
    rows = jobs_of_kept_batches().order_by().values_list("batch_id", "status").annotate(n=Count("*"))
    return {(batch_id, status): n for batch_id, status, n in rows}


def active_workers() -> list[dict[str, Any]]:
    """Active workers with their offer, their last heartbeat and their live attempts:
    `running` ones, and `launching` ones (claimed, not started yet: a worker holds a few
    beyond its cores while jobs are short, a cluster queues them)."""
    live: dict[tuple[Any, str], int] = {
        (worker_id, state): n
        for worker_id, state, n in Attempt.objects.filter(end_time__isnull=True, worker__state=Worker.State.ACTIVE)
        .order_by()
        .values_list("worker_id", "state")
        .annotate(n=Count("*"))
    }
    workers = (
        Worker.objects.filter(state=Worker.State.ACTIVE)
        .order_by("name")
        .values("id", "name", "executor", "node", "cpus", "memory_mib", "heartbeat_at", "lease_expires")
    )
    return [
        {
            **worker,
            "running": live.get((worker["id"], Attempt.State.RUNNING), 0),
            "launching": live.get((worker["id"], Attempt.State.LAUNCHING), 0),
        }
        for worker in workers
    ]
