"""The one function that changes a job's status, `transition()` (the statuses and the
moves allowed between them are `jobs.statuses`), and `set_reason`, which changes only
the reason a job in a state gives.

`transition()` is the only writer of `Job.status` (views, admin, commands, the worker's
recording and the dispatcher all call it): a conditional UPDATE from the expected
state(s), so two racing writers cannot both win, and one JobEvent row for each job that
changed. It writes through the ORM here, or through the plain-SQL fast path of
`jobs.transitions_sql`: the same rows and events either way.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs import sql
from jobs.models import Job, JobEvent
from jobs.statuses import TERMINAL, Status, check_transition
from jobs.transitions_sql import FastPlan, fast_transition


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
    through: str | None = None,
    chunk: int = sql.CHUNK,
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

    `through` names a state the jobs passed through on the way, unseen (an attempt that
    started and ended between two writes of its worker): it gets its own event and
    timestamps, and the row is written once.

    Two implementations write the same rows and events, `chunk` jobs per
    statement: `jobs.transitions_sql.fast_transition` (a few statements of plain SQL,
    used whenever `guard` and `fields` are simple enough to translate, which is every
    call the worker makes) and `_orm_transition` (the ORM, for anything else).
    """
    if through is None:
        sources = check_transition(from_statuses, to_status)
        steps = (to_status,)
    else:
        sources = check_transition(from_statuses, through)
        check_transition([through], to_status)
        steps = (through, to_status)
    now = now or timezone.now()
    updates = {"status": to_status, "reason": reason, **fields}
    for step in steps:
        updates.update(_timestamps(step, now))
    ids = list(job_ids)
    if not ids:
        return []
    # The reason belongs to the final state; a state passed through has none.
    reasons = tuple(reason if step == steps[-1] else "" for step in steps)
    plan = FastPlan.build(updates=updates, guard=guard)
    if plan is None:
        return _orm_transition(ids=ids, sources=sources, steps=steps, reasons=reasons, now=now, guard=guard, updates=updates, chunk=chunk)
    return fast_transition(ids=ids, sources=sources, steps=steps, reasons=reasons, now=now, plan=plan, chunk=chunk)


def _orm_transition(
    *,
    ids: list[Any],
    sources: frozenset[str],
    steps: tuple[str, ...],
    reasons: tuple[str, ...],
    now: datetime,
    guard: Q | None,
    updates: dict[str, Any],
    chunk: int,
) -> list[Any]:

    changed: list[Any] = []
    with transaction.atomic():
        for start in range(0, len(ids), chunk):
            some = ids[start : start + chunk]
            # Lock the rows first (a no-op on SQLite, whose IMMEDIATE transaction already
            # holds the write lock) so the statuses read here are the ones we replace.
            # In id order, as the fast path locks them: two transactions locking the same
            # rows in one order cannot deadlock.
            candidates = Job.objects.filter(pk__in=some, status__in=sources).order_by("pk")
            if guard is not None:
                candidates = candidates.filter(guard)
            rows = list(candidates.select_for_update(of=("self",)).values_list("pk", "status", "attempts", "batch_id", "batch__owner_id"))
            if not rows:
                continue
            Job.objects.filter(pk__in=[pk for pk, *_ in rows], status__in=sources).update(**updates)
            if "attempts" in updates:
                attempts_now = dict(Job.objects.filter(pk__in=[pk for pk, *_ in rows]).order_by().values_list("pk", "attempts"))
                rows = [(pk, old, attempts_now[pk], batch_id, owner_id) for pk, old, _, batch_id, owner_id in rows]
            JobEvent.objects.bulk_create(
                JobEvent(
                    job_id=pk,
                    batch_id=batch_id,
                    owner_id=owner_id,
                    from_status=before,
                    to_status=after,
                    reason=step_reason,
                    time=now,
                    attempt=attempts,
                )
                for pk, old, attempts, batch_id, owner_id in rows
                for before, after, step_reason in zip((old, *steps[:-1]), steps, reasons, strict=True)
            )
            changed.extend(pk for pk, *_ in rows)
    return changed


def set_reason(*, job_ids: Iterable[Any], status: str, reason: str, guard: Q | None = None) -> int:
    """Change the reason of the jobs of `job_ids` still in `status` (a job waiting in a
    cluster's queue says why, and the why changes: `Priority`, then `Resources`). Not a
    transition: the status stays, and no event is written."""

    jobs = Job.objects.filter(pk__in=list(job_ids), status=status).exclude(reason=reason)
    return (jobs.filter(guard) if guard is not None else jobs).update(reason=reason)
