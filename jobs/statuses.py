"""A job's statuses and the moves allowed between them: the vocabulary of every app.

States follow AWS Batch: SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING ->
SUCCEEDED | FAILED. Cancel sends any unfinished job to FAILED; a failed attempt with
attempts left, and a retry asked for by the user, go back to RUNNABLE. Only
`jobs.transitions` writes them.
"""

from collections.abc import Iterable

from django.db import models


class Status(models.TextChoices):
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED})
UNFINISHED = frozenset(set(Status) - TERMINAL)
QUEUED = frozenset({Status.SUBMITTED, Status.PENDING, Status.RUNNABLE})
LIVE = frozenset({Status.STARTING, Status.RUNNING})
# States in which a job may have a live attempt: LIVE, and RUNNABLE while its attempt
# waits in a cluster's own queue (Slurm PENDING).
HELD = LIVE | {Status.RUNNABLE}

ALLOWED: dict[str, frozenset[str]] = {
    Status.SUBMITTED: frozenset({Status.PENDING, Status.RUNNABLE, Status.FAILED}),
    Status.PENDING: frozenset({Status.RUNNABLE, Status.FAILED}),
    Status.RUNNABLE: frozenset({Status.PENDING, Status.STARTING, Status.FAILED}),
    Status.STARTING: frozenset({Status.RUNNING, Status.RUNNABLE, Status.SUCCEEDED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.RUNNABLE}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset({Status.RUNNABLE}),
}

CANCELLED_REASON = "Cancelled by user"


class TransitionError(ValueError):
    """A transition that the state machine does not allow."""


def check_transition(from_statuses: Iterable[str], to_status: str) -> frozenset[str]:
    sources = frozenset(from_statuses)
    if not sources:
        raise TransitionError("no source state given")
    for source in sources:
        if to_status not in ALLOWED[source]:
            raise TransitionError(f"{source} -> {to_status} is not a job transition")
    return sources
