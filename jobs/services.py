"""What users and operators do to jobs: cancel and retry. Status changes go through
`jobs.states.transition`; executors learn of a cancel by seeing the job FAILED."""

from django.db.models import QuerySet

from jobs.models import Job
from jobs.states import CANCELLED_REASON, UNFINISHED, Status, transition


def cancel_jobs(*, jobs: QuerySet[Job], reason: str = CANCELLED_REASON) -> int:
    """Send every unfinished job of `jobs` to FAILED with `reason`. Finished jobs are
    left as they are. Returns how many changed. Idempotent."""
    ids = list(jobs.filter(status__in=UNFINISHED).values_list("pk", flat=True))
    return len(transition(job_ids=ids, from_statuses=UNFINISHED, to_status=Status.FAILED, reason=reason))


def retry_failed_jobs(*, jobs: QuerySet[Job]) -> int:
    """Put the FAILED jobs of `jobs` back to RUNNABLE for a new attempt; jobs in any
    other state are untouched. Returns how many changed."""
    ids = list(jobs.filter(status=Status.FAILED).values_list("pk", flat=True))
    changed = transition(
        job_ids=ids, from_statuses=[Status.FAILED], to_status=Status.RUNNABLE, reason="Retry requested by user", exit_code=None
    )
    return len(changed)
