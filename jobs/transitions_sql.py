"""The fast path of `jobs.transitions.transition()`: the same rows and events, written
with a few statements of plain, parameterised SQL (`jobs.sql`) instead of the ORM.

The worker changes a few jobs at a time, three times per job; building those queries
through the ORM cost more than running them. `transition()` comes here whenever its
`guard` and `fields` are simple enough to translate (`FastPlan.build`; every call the
worker makes), and takes the ORM path otherwise:

  one source state:  UPDATE job SET ... WHERE id IN (...) AND (status = %s [AND guard])
                     -- (on PostgreSQL `(...) IS TRUE`: found by id, never through an
                     -- index on status or worker: `sql.filter_rows_found_by_key`)
                     RETURNING id, attempts
                     -- the old status is that one source; the UPDATE itself is the
                     -- conditional write (PostgreSQL re-checks the WHERE on a row a
                     -- concurrent writer changed first; SQLite holds the write lock).
  several sources:   SELECT id, status FROM job WHERE id IN (...) AND status IN (...)
                     [AND guard] FOR UPDATE          -- locks them, reads old statuses
                     UPDATE job SET ... WHERE id IN (<those>) AND status IN (...)
                     RETURNING id, attempts
  then:              INSERT INTO jobevent (...) VALUES (...), (...)   -- one per chunk

RETURNING needs SQLite >= 3.35 or PostgreSQL; anywhere else the ORM path runs.
"""

from datetime import datetime
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.db.models import F, Q, Value
from django.db.models.expressions import CombinedExpression

from batches.models import Batch
from jobs import sql
from jobs.models import Job, JobEvent
from jobs.statuses import Status

_EVENT_FIELDS = ("job", "batch", "owner", "from_status", "to_status", "reason", "attempt", "time")


class FastPlan:
    """The SET and guard parts of the fast path's UPDATE, or None from `build` when
    `updates` or `guard` hold something it does not translate (then the ORM runs)."""

    def __init__(self, set_sql: str, set_params: list[Any], guard_sql: str, guard_params: list[Any]) -> None:
        self.set_sql, self.set_params = set_sql, set_params
        self.guard_sql, self.guard_params = guard_sql, guard_params

    @classmethod
    def build(cls, *, updates: dict[str, Any], guard: Q | None) -> "FastPlan | None":

        conn = sql.default_connection()
        if not sql.supports_returning(conn):
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
                set_params.append(sql.db_value(field, value, conn, save=True))
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
                guard_params.append(sql.db_value(field, value, conn, save=False))
        return cls(", ".join(set_parts), set_params, "".join(guard_parts), guard_params)


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


def fast_transition(
    *,
    ids: list[Any],
    sources: frozenset[str],
    steps: tuple[str, ...],
    reasons: tuple[str, ...],
    now: datetime,
    plan: FastPlan,
    chunk: int = sql.CHUNK,
) -> list[Any]:
    """`transition()`'s writes for `ids`, `chunk` jobs per statement: each job in
    one of `sources` (and matching the plan's guard) goes through `steps` (one event
    per step, with the reason of the same position in `reasons`), the row written once
    with the plan's SET. Returns the ids that changed. In the caller's transaction if
    there is one (no savepoint: if a statement fails, the whole transaction rolls back
    anyway), else in its own."""

    conn = sql.default_connection()
    qn = conn.ops.quote_name
    pk_field = Job._meta.pk
    job_table, event_table = sql.table(Job, conn), sql.table(JobEvent, conn)
    id_col, status_col, attempts_col = qn(pk_field.column), sql.column(Job, "status", conn), sql.column(Job, "attempts", conn)
    batch_col = sql.column(Job, "batch", conn)
    # The event's batch and owner come back with the changed row (the feed's scope; a
    # batch's owner never changes): no statement of their own.
    owner_of_batch = (
        f"(SELECT {sql.column(Batch, 'owner', conn)} FROM {sql.table(Batch, conn)}"  # noqa: S608 (names from the models)
        f" WHERE {sql.table(Batch, conn)}.{sql.column(Batch, 'id', conn)} = {job_table}.{batch_col})"
    )
    ordered_sources = [status for status in Status if status in sources]  # a stable order
    event_columns = ", ".join(sql.column(JobEvent, name, conn) for name in _EVENT_FIELDS)
    event_time = sql.db_value(JobEvent._meta.get_field("time"), now, conn)
    lock = " FOR UPDATE" if conn.features.has_select_for_update else ""
    # The rows are named by id: the status and the guard only filter them.
    condition = sql.filter_rows_found_by_key(f"{status_col} IN ({sql.marks(ordered_sources)}){plan.guard_sql}", conn)
    changed: list[Any] = []
    with transaction.atomic(savepoint=False), conn.cursor() as cursor:
        for start in range(0, len(ids), chunk):
            some = [pk_field.get_db_prep_value(pk, conn) for pk in ids[start : start + chunk]]
            if len(ordered_sources) == 1:
                old_status: dict[Any, str] | None = None
                where_ids = some
            else:
                cursor.execute(
                    f"SELECT {id_col}, {status_col} FROM {job_table}"  # noqa: S608 (identifiers and %s only)
                    f" WHERE {id_col} IN ({sql.marks(some)}) AND {condition} ORDER BY {id_col}{lock}",
                    [*some, *ordered_sources, *plan.guard_params],
                )
                old_status = {pk_field.to_python(pk): status for pk, status in cursor.fetchall()}
                if not old_status:
                    continue
                where_ids = [pk_field.get_db_prep_value(pk, conn) for pk in old_status]
            # With several sources the rows are locked (or, on SQLite, the whole database
            # is), so the guard need not be repeated; it costs nothing to keep it.
            cursor.execute(
                f"UPDATE {job_table} SET {plan.set_sql}"  # noqa: S608 (identifiers and %s only)
                f" WHERE {id_col} IN ({sql.marks(where_ids)}) AND {condition}"
                f" RETURNING {id_col}, {attempts_col}, {batch_col}, {owner_of_batch}",
                [*plan.set_params, *where_ids, *ordered_sources, *plan.guard_params],
            )
            returned = [(pk_field.to_python(pk), attempts, batch_id, owner_id) for pk, attempts, batch_id, owner_id in cursor.fetchall()]
            if not returned:
                continue
            events: list[Any] = []
            for pk, attempts, batch_id, owner_id in returned:
                old = ordered_sources[0] if old_status is None else old_status[pk]
                for before, after, reason in zip((old, *steps[:-1]), steps, reasons, strict=True):
                    events += [pk_field.get_db_prep_value(pk, conn), batch_id, owner_id, before, after, reason, attempts, event_time]
            cursor.execute(
                f"INSERT INTO {event_table} ({event_columns}) VALUES {sql.rows(len(_EVENT_FIELDS), len(returned) * len(steps))}",  # noqa: S608
                events,
            )
            changed.extend(pk for pk, *_ in returned)
    return changed
