"""The one function that changes a job's status (the statuses and the moves allowed
between them are `jobs.statuses`).

`transition()` is the only writer of `Job.status` (views, admin, commands and executors
all call it): a conditional UPDATE from the expected state(s), so two racing writers
cannot both win, and one JobEvent row for each job that changed.
"""

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.expressions import CombinedExpression
from django.utils import timezone

from jobs.models import Attempt, Job, JobEvent
from jobs.statuses import HELD, LIVE, TERMINAL, Status, check_transition

# Large transitions (cancel a batch of 100,000 jobs) run in chunks: SQLite refuses more
# than 32,766 bound parameters and PostgreSQL plans long IN lists badly.
_CHUNK = 500


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

    Two implementations write the same rows and events: `_fast_transition` (a few
    statements of plain SQL, used whenever `guard` and `fields` are simple enough to
    translate, which is every call the worker makes) and `_orm_transition` (the ORM,
    for anything else).
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
    plan = _FastPlan.build(updates=updates, guard=guard)
    if plan is None:
        return _orm_transition(ids=ids, sources=sources, steps=steps, reason=reason, now=now, guard=guard, updates=updates)
    return _fast_transition(ids=ids, sources=sources, steps=steps, reason=reason, now=now, plan=plan)


def _orm_transition(
    *, ids: list[Any], sources: frozenset[str], steps: tuple[str, ...], reason: str, now: datetime, guard: Q | None, updates: dict[str, Any]
) -> list[Any]:

    changed: list[Any] = []
    with transaction.atomic():
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            # Lock the rows first (a no-op on SQLite, whose IMMEDIATE transaction already
            # holds the write lock) so the statuses read here are the ones we replace.
            # In id order, as the fast path locks them: two transactions locking the same
            # rows in one order cannot deadlock.
            candidates = Job.objects.filter(pk__in=chunk, status__in=sources).order_by("pk")
            if guard is not None:
                candidates = candidates.filter(guard)
            rows = list(candidates.select_for_update().values_list("pk", "status", "attempts"))
            if not rows:
                continue
            Job.objects.filter(pk__in=[pk for pk, _, _ in rows], status__in=sources).update(**updates)
            if "attempts" in updates:
                attempts_now = dict(Job.objects.filter(pk__in=[pk for pk, _, _ in rows]).order_by().values_list("pk", "attempts"))
                rows = [(pk, old, attempts_now[pk]) for pk, old, _ in rows]
            JobEvent.objects.bulk_create(
                JobEvent(
                    job_id=pk, from_status=before, to_status=after, reason=_step_reason(after, steps, reason), time=now, attempt=attempts
                )
                for pk, old, attempts in rows
                for before, after in zip((old, *steps[:-1]), steps, strict=True)
            )
            changed.extend(pk for pk, _, _ in rows)
    return changed


# -- the fast path ------------------------------------------------------------------------
# The worker changes a few jobs at a time, three times per job; building those queries
# through the ORM cost more than running them. The fast path writes the same rows with
# plain, parameterised SQL (values only ever travel as parameters, converted by the
# model fields exactly as the ORM would convert them):
#
#   one source state:  UPDATE job SET ... WHERE id IN (...) AND status = %s [AND guard]
#                      RETURNING id, attempts
#                      -- the old status is that one source; the UPDATE itself is the
#                      -- conditional write (PostgreSQL re-checks the WHERE on a row a
#                      -- concurrent writer changed first; SQLite holds the write lock).
#   several sources:   SELECT id, status FROM job WHERE id IN (...) AND status IN (...)
#                      [AND guard] FOR UPDATE          -- locks them, reads old statuses
#                      UPDATE job SET ... WHERE id IN (<those>) AND status IN (...)
#                      RETURNING id, attempts
#   then:              INSERT INTO jobevent (...) VALUES (...), (...)   -- one per chunk
#
# RETURNING needs SQLite >= 3.35 or PostgreSQL; anywhere else the ORM path runs.


class _FastPlan:
    """The SET and guard parts of the fast path's UPDATE, or None from `build` when
    `updates` or `guard` hold something it does not translate (then the ORM runs)."""

    def __init__(self, set_sql: str, set_params: list[Any], guard_sql: str, guard_params: list[Any]) -> None:
        self.set_sql, self.set_params = set_sql, set_params
        self.guard_sql, self.guard_params = guard_sql, guard_params

    @classmethod
    def build(cls, *, updates: dict[str, Any], guard: Q | None) -> "_FastPlan | None":

        conn = _db()
        if not _supports_returning(conn):
            return None
        qn = conn.ops.quote_name
        set_parts, set_params = [], []
        for name, value in updates.items():
            field = _plain_field(Job, name)
            if field is None:
                return None
            column = qn(field.column)
            if isinstance(value, CombinedExpression):
                step = _int_step(value, Job)
                if step is None:
                    return None
                source, operator, amount = step
                set_parts.append(f"{column} = {qn(source)} {operator} %s")
                set_params.append(amount)
            elif hasattr(value, "resolve_expression"):
                return None
            else:
                set_parts.append(f"{column} = %s")
                set_params.append(_db_value(field, value, conn, save=True))
        guard_parts, guard_params = [], []
        if guard is not None:
            if guard.connector != Q.AND or guard.negated:
                return None
            for child in guard.children:
                if not isinstance(child, tuple) or "__" in child[0]:
                    return None
                name, value = child
                field = _plain_field(Job, name)
                if field is None or value is None or hasattr(value, "resolve_expression"):
                    return None
                guard_parts.append(f" AND {qn(field.column)} = %s")
                guard_params.append(_db_value(field, value, conn, save=False))
        return cls(", ".join(set_parts), set_params, "".join(guard_parts), guard_params)


def _db() -> Any:
    # The connection itself rather than the `django.db.connection` proxy, whose every
    # attribute access is a thread-local lookup: this path makes hundreds of them.
    return connections[DEFAULT_DB_ALIAS]


def _supports_returning(conn: Any) -> bool:
    if conn.vendor == "postgresql":
        return True
    return conn.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)


def _plain_field(model: type[models.Model], name: str) -> models.Field | None:
    """The model's concrete column field called `name` (or its attname), else None."""
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    if not field.concrete or field.many_to_many or field.primary_key:
        return None
    return field


def _int_step(value: CombinedExpression, model: type[models.Model]) -> tuple[str, str, int] | None:
    """`F("attempts") + 1` -> ("attempts" column, "+", 1); None for anything else."""
    lhs, rhs = value.lhs, value.rhs
    if value.connector not in ("+", "-") or not isinstance(lhs, F) or not isinstance(rhs, Value) or type(rhs.value) is not int:
        return None
    field = _plain_field(model, lhs.name)
    return None if field is None else (field.column, value.connector, rhs.value)


def _db_value(field: models.Field, value: Any, conn: Any, *, save: bool) -> Any:
    """`value` as the ORM would send it for `field` (a model instance stands for its
    primary key on a foreign key, as in `update(worker=w)` and `Q(worker=w)`)."""
    if field.is_relation:
        if isinstance(value, models.Model):
            value = value.pk
        field = field.target_field
    return field.get_db_prep_save(value, conn) if save else field.get_db_prep_value(value, conn)


def _step_reason(step: str, steps: tuple[str, ...], reason: str) -> str:
    """The reason belongs to the final state; a state passed through has none."""
    return reason if step == steps[-1] else ""


def _fast_transition(
    *, ids: list[Any], sources: frozenset[str], steps: tuple[str, ...], reason: str, now: datetime, plan: _FastPlan
) -> list[Any]:

    conn = _db()
    qn = conn.ops.quote_name
    pk_field = Job._meta.pk
    job_table, event_table = qn(Job._meta.db_table), qn(JobEvent._meta.db_table)
    id_col, status_col, attempts_col = qn(pk_field.column), qn("status"), qn(Job._meta.get_field("attempts").column)
    ordered_sources = [status for status in Status if status in sources]  # a stable order
    event_columns = ", ".join(qn(JobEvent._meta.get_field(name).column) for name in _EVENT_FIELDS)
    event_time = JobEvent._meta.get_field("time").get_db_prep_save(now, conn)
    lock = " FOR UPDATE" if conn.features.has_select_for_update else ""
    changed: list[Any] = []
    # No savepoint inside a caller's transaction (the worker records and claims in one):
    # if a statement fails, the whole transaction rolls back anyway.
    with transaction.atomic(savepoint=False), conn.cursor() as cursor:
        for start in range(0, len(ids), _CHUNK):
            chunk = [pk_field.get_db_prep_value(pk, conn) for pk in ids[start : start + _CHUNK]]
            if len(ordered_sources) == 1:
                old_status: dict[Any, str] | None = None
                where_ids = chunk
            else:
                cursor.execute(
                    f"SELECT {id_col}, {status_col} FROM {job_table}"  # noqa: S608 (identifiers and %s only)
                    f" WHERE {id_col} IN ({_marks(chunk)}) AND {status_col} IN ({_marks(ordered_sources)}){plan.guard_sql}"
                    f" ORDER BY {id_col}{lock}",
                    [*chunk, *ordered_sources, *plan.guard_params],
                )
                old_status = {pk_field.to_python(pk): status for pk, status in cursor.fetchall()}
                if not old_status:
                    continue
                where_ids = [pk_field.get_db_prep_value(pk, conn) for pk in old_status]
            # With several sources the rows are locked (or, on SQLite, the whole database
            # is), so the guard need not be repeated; it costs nothing to keep it.
            cursor.execute(
                f"UPDATE {job_table} SET {plan.set_sql}"  # noqa: S608 (identifiers and %s only)
                f" WHERE {id_col} IN ({_marks(where_ids)}) AND {status_col} IN ({_marks(ordered_sources)}){plan.guard_sql}"
                f" RETURNING {id_col}, {attempts_col}",
                [*plan.set_params, *where_ids, *ordered_sources, *plan.guard_params],
            )
            rows = [(pk_field.to_python(pk), attempts) for pk, attempts in cursor.fetchall()]
            if not rows:
                continue
            events: list[Any] = []
            for pk, attempts in rows:
                old = ordered_sources[0] if old_status is None else old_status[pk]
                for before, after in zip((old, *steps[:-1]), steps, strict=True):
                    events += [
                        pk_field.get_db_prep_value(pk, conn),
                        before,
                        after,
                        _step_reason(after, steps, reason),
                        attempts,
                        event_time,
                    ]
            cursor.execute(
                f"INSERT INTO {event_table} ({event_columns}) VALUES {', '.join([f'({_marks(_EVENT_FIELDS)})'] * (len(rows) * len(steps)))}",  # noqa: S608
                events,
            )
            changed.extend(pk for pk, _ in rows)
    return changed


_EVENT_FIELDS = ("job", "from_status", "to_status", "reason", "attempt", "time")


def _marks(values: list[Any] | tuple[Any, ...]) -> str:
    return ", ".join(["%s"] * len(values))


def transition_one(
    *, job_id: Any, from_statuses: Iterable[str], to_status: str, reason: str = "", guard: Q | None = None, **fields: Any
) -> bool:
    """`transition()` for one job: True if it changed."""
    return bool(transition(job_ids=[job_id], from_statuses=from_statuses, to_status=to_status, reason=reason, guard=guard, **fields))


CANCEL_PENDING_REASON = "Cancel requested; waiting for the attempt to stop"


def has_live_attempt() -> Exists:
    """True for a job with a live attempt row (started, or waiting in a cluster's queue)."""

    return Exists(Attempt.objects.filter(job=OuterRef("pk"), end_time__isnull=True))


def holding_an_attempt() -> Q:
    """Jobs whose attempt must stop before they can end: STARTING, RUNNING, or RUNNABLE
    while the attempt waits in a cluster's queue."""
    return Q(status__in=LIVE) | Q(status=Status.RUNNABLE) & has_live_attempt()


def set_reason(*, job_ids: Iterable[Any], status: str, reason: str, guard: Q | None = None) -> int:
    """Change the reason of the jobs of `job_ids` still in `status` (a job waiting in a
    cluster's queue says why, and the why changes: `Priority`, then `Resources`). Not a
    transition: the status stays, and no event is written."""

    jobs = Job.objects.filter(pk__in=list(job_ids), status=status).exclude(reason=reason)
    return (jobs.filter(guard) if guard is not None else jobs).update(reason=reason)


def request_cancel(*, job_ids: Iterable[Any], by: Any = None, now: datetime | None = None) -> list[Any]:
    """Ask for the live attempts (STARTING, RUNNING, or RUNNABLE waiting in a cluster's
    queue) of `job_ids` to be stopped: record
    who asked and when, and say so in `reason`. The status does not change here: the job
    becomes FAILED `Cancelled by user` once its worker confirms the attempt has stopped
    (`jobs.scheduling.record_reports`). Returns the ids asked for the first time."""

    now = now or timezone.now()
    ids = list(job_ids)
    changed: list[Any] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        pending = Job.objects.filter(holding_an_attempt(), pk__in=chunk)
        found = list(pending.filter(cancel_requested_at__isnull=True).values_list("pk", flat=True))
        if found:
            Job.objects.filter(pk__in=found, status__in=HELD, cancel_requested_at__isnull=True).update(
                cancel_requested_at=now, cancel_requested_by=by, reason=CANCEL_PENDING_REASON
            )
            changed.extend(found)
    return changed
