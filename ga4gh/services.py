"""Creating and cancelling GA4GH TES tasks: thin over `jobs.tasks` and `jobs.services`."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ga4gh.documents import check_document
from ga4gh.models import TaskRecord
from jobs.models import Job
from jobs.services import cancel_jobs
from jobs.tasks import submit_task


def create_task(*, user: AbstractBaseUser, document: dict[str, Any]) -> TaskRecord:
    """A task of `user`'s from a tesTask `document`: checked (`ga4gh.documents`: 400
    naming the field), allowed (403 unless the user may run commands), and written with
    its one-job batch in one transaction."""
    checked = check_document(user=user, document=document)
    with transaction.atomic():
        batch = submit_task(
            user=user,
            name=(checked.document.get("name") or "")[:200],
            cpu=checked.cpu,
            memory_mib=checked.memory_mib,
            task=checked.task,
            filesystems=checked.filesystems,
        )
        return TaskRecord.objects.create(
            batch=batch,
            job=Job.objects.get(batch=batch),
            owner=user,
            name=checked.document.get("name") or "",
            tags=checked.document.get("tags") or {},
            document=checked.document,
            creation_time=batch.create_time,
            warnings=checked.warnings,
        )


def cancel_task(*, user: AbstractBaseUser, record: TaskRecord) -> None:
    """Cancel the task's job (CANCELING while its attempt stops, then CANCELED); a
    finished task is left as it is. Idempotent."""
    cancel_jobs(jobs=Job.objects.filter(pk=record.job_id), by=user)
