"""Reads of jobs, always through a batch the caller owns."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from batches.models import Batch
from jobs.models import Job, JobEvent, Worker


def batch_jobs(*, batch_id: Any) -> QuerySet:
    """Jobs of one batch as rows of plain values (what the job list shows; model
    instances cost more than the query); the caller has already checked the batch is
    the user's."""
    return Job.objects.filter(batch_id=batch_id).values("id", "index", "log_id", "args", "status", "reason")


def get_user_job(*, user: AbstractBaseUser, batch_id: Any, job_id: Any) -> Job | None:
    """One job of the caller's, with its batch (one query)."""
    return (
        Job.objects.filter(pk=job_id, batch_id=batch_id, batch__owner=user, batch__deleted_at__isnull=True).select_related("batch").first()
    )


def batch_filesystem_ids(*, batch_id: Any) -> list[Any]:
    """Ids of the batch's filesystems, by name (one query, no model instances)."""
    through = Batch.filesystems.through
    return list(through.objects.filter(batch_id=batch_id).order_by("filesystem__name").values_list("filesystem_id", flat=True))


def get_user_job_by_log(*, user: AbstractBaseUser, log_id: Any) -> Job | None:
    return Job.objects.filter(log_id=log_id, batch__owner=user, batch__deleted_at__isnull=True).first()


def job_events(*, job: Job) -> QuerySet[JobEvent]:
    return JobEvent.objects.filter(job=job)


def live_worker_count() -> int:
    """Workers whose lease has not run out."""
    return Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__gt=timezone.now()).count()


def live_worker_isolation() -> dict[str, bool]:
    """For each isolation part, whether every live worker that reports it has it in
    force (cluster workers report none: their scheduler isolates)."""
    parts: dict[str, bool] = {}
    for report in Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__gt=timezone.now()).values_list("isolation", flat=True):
        for part, in_force in (report or {}).items():
            parts[part] = parts.get(part, True) and bool(in_force)
    return parts
