"""Job states and the one function that changes them.

States follow AWS Batch: SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING ->
SUCCEEDED | FAILED. Cancel sends any unfinished job to FAILED; a failed attempt with
attempts left, and a retry asked for by the user, go back to RUNNABLE.

`transition()` is the only writer of `Job.status` (views, admin, commands and executors
all call it): a conditional UPDATE from the expected state(s), so two racing writers
cannot both win, and one JobEvent row for each job that changed.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


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

# Large transitions (cancel a batch of 100,000 jobs) run in chunks: SQLite refuses more
# than 32,766 bound parameters and PostgreSQL plans long IN lists badly.
_CHUNK = 500


class TransitionError(ValueError):
    """A transition that the state machine does not allow."""


def _check(from_statuses: Iterable[str], to_status: str) -> frozenset[str]:
    sources = frozenset(from_statuses)
    if not sources:
        raise TransitionError("no source state given")
    for source in sources:
        if to_status not in ALLOWED[source]:
            raise TransitionError(f"{source} -> {to_status} is not a job transition")
    return sources


def _timestamps(to_status: str, now: datetime) -> dict[str, Any]:
    if to_status == Status.RUNNING:
        return {"start_time": now}
    if to_status in TERMINAL:
        return {"stop_time": now}
    if to_status == Status.RUNNABLE:
        # A new attempt: the previous attempt's times are in its events.
        return {"start_time": None, "stop_time": None}
    return {}


def transition(
    *,
    job_ids: Iterable[Any],
    from_statuses: Iterable[str],
    to_status: str,
    reason: str = "",
    now: datetime | None = None,
    guard: Q | None = None,
    **fields: Any,
) -> list[Any]:
    """Move each of `job_ids` whose status is one of `from_statuses` to `to_status`.

    Returns the ids that changed. A job in another state is left alone (someone else
    won the race) and is not in the result. Sets start_time on RUNNING, stop_time on
    SUCCEEDED/FAILED, clears both on a return to RUNNABLE, writes `reason` and any extra
    `fields` (exit_code, worker, ...), and adds one JobEvent per changed job, all in one
    transaction.

    `guard` narrows the condition further: an executor passes `Q(worker=me, attempts=n)`
    so that a late report from an attempt that was already declared lost (and requeued
    elsewhere) cannot overwrite the job's newer attempt. `fields` may hold expressions
    (`attempts=F("attempts") + 1`); the event then records the attempt number after the
    change.
    """
    from jobs.models import Job, JobEvent

    sources = _check(from_statuses, to_status)
    now = now or timezone.now()
    updates = {"status": to_status, "reason": reason, **_timestamps(to_status, now), **fields}
    ids = list(job_ids)
    changed: list[Any] = []
    with transaction.atomic():
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            # Lock the rows first (a no-op on SQLite, whose IMMEDIATE transaction already
            # holds the write lock) so the statuses read here are the ones we replace.
            # order_by(): the model's default ordering would only cost time here.
            candidates = Job.objects.filter(pk__in=chunk, status__in=sources).order_by()
            if guard is not None:
                candidates = candidates.filter(guard)
            rows = list(candidates.select_for_update().values_list("pk", "status", "attempts"))
            if not rows:
                continue
            Job.objects.filter(pk__in=[pk for pk, _, _ in rows], status__in=sources).update(**updates)
            if "attempts" in fields:
                attempts_now = dict(Job.objects.filter(pk__in=[pk for pk, _, _ in rows]).order_by().values_list("pk", "attempts"))
                rows = [(pk, old, attempts_now[pk]) for pk, old, _ in rows]
            JobEvent.objects.bulk_create(
                JobEvent(job_id=pk, from_status=old, to_status=to_status, reason=reason, time=now, attempt=attempts)
                for pk, old, attempts in rows
            )
            changed.extend(pk for pk, _, _ in rows)
    return changed


def transition_one(
    *, job_id: Any, from_statuses: Iterable[str], to_status: str, reason: str = "", guard: Q | None = None, **fields: Any
) -> bool:
    """`transition()` for one job: True if it changed."""
    return bool(transition(job_ids=[job_id], from_statuses=from_statuses, to_status=to_status, reason=reason, guard=guard, **fields))
