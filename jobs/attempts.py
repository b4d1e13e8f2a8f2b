"""The attempt rows: opened when a worker claims a job, marked running when the executor
starts it, closed when it ends. The only writer of `jobs.models.Attempt`.

Each function writes many attempts in one or a few statements (the worker records what
happened to dozens of attempts per step), written with `jobs.sql`: values always travel
as parameters; on PostgreSQL they carry explicit casts, because a row of parameters in a
derived table has no column types of its own.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from core import reason_codes
from jobs import fairshare, sql
from jobs.executors.base import Outcome, Queued, Started
from jobs.executors.usage import Usage
from jobs.models import Attempt, Job, Worker


def _column(name: str) -> str:
    return sql.column(Attempt, name, sql.default_connection())


def _prep(name: str, value: Any) -> Any:
    """`value` as the ORM writes it in the attempt's column `name`."""
    return sql.db_value(Attempt._meta.get_field(name), value, sql.default_connection())


def _typed(name: str) -> str:
    """A parameter marker for the column `name`, cast to its type on PostgreSQL."""
    return sql.typed_mark(Attempt._meta.get_field(name), sql.default_connection())


def open_attempts(*, worker: Worker, executor: str, items: Sequence[tuple[Any, int, int, int]], now: datetime) -> None:
    """A LAUNCHING attempt row for each (job id, attempt number, cpus, memory MiB) the
    worker claimed: what the attempt is given is kept on its row. Runs in the claim's
    transaction: the database refuses a second live attempt of a job (a partial unique
    index), so a bug elsewhere fails the claim, never runs twice."""
    names = ("job", "number", "cpus", "memory_mib", "executor", "worker", "state", "create_time", "charged")
    names += ("external_id", "node", "reason", "reason_code")
    columns = ", ".join(_column(name) for name in names)
    conn = sql.default_connection()
    table = sql.table(Attempt, conn)
    constants = {
        "executor": _prep("executor", executor),
        "worker": _prep("worker", worker.pk),
        "state": Attempt.State.LAUNCHING.value,
        "create_time": _prep("create_time", now),
        "charged": _prep("charged", True),
        "external_id": "",
        "node": "",
        "reason": "",
        "reason_code": "",
    }
    with conn.cursor() as cursor:
        for start in range(0, len(items), sql.CHUNK):
            chunk = items[start : start + sql.CHUNK]
            params: list[Any] = []
            for job_id, number, cpus, memory_mib in chunk:
                values = {**constants, "job": _prep("job", job_id), "number": number, "cpus": cpus, "memory_mib": memory_mib}
                params.extend(values[name] for name in names)
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {sql.rows(len(names), len(chunk))}", params)  # noqa: S608


def mark_started(*, reports: Sequence[Started], now: datetime) -> None:
    """LAUNCHING -> RUNNING with the executor's external id, node, log offset and
    start time (its own clock reading when it gave one, else `now`)."""
    rows = [
        {
            "job": r.job_id,
            "number": r.attempt,
            "external_id": r.external_id,
            "node": r.node,
            "log_offset": r.log_offset,
            "start_time": at(r.time, now),
        }
        for r in reports
    ]
    _update_from_rows(rows=rows, keys=("job", "number"), constant={"state": Attempt.State.RUNNING.value}, live_only=True)


def mark_queued(*, reports: Sequence[Queued]) -> None:
    """The external id (and node, once placed) of attempts waiting in a cluster's queue;
    they stay LAUNCHING until they start."""
    rows = [{"job": r.job_id, "number": r.attempt, "external_id": r.external_id, "node": r.node} for r in reports]
    _update_from_rows(rows=rows, keys=("job", "number"), constant={}, live_only=True)


def close_attempts(
    *, outcomes: Iterable[Outcome], now: datetime, worker: Worker | None = None, started: dict[tuple[str, int], Started] | None = None
) -> None:
    """ENDED with the outcome's exit code, signal, reason and reason code, what it used,
    and whether it is charged. Only live attempts are closed (a second report of the
    same end changes nothing); with `worker`, only that worker's. `started` holds starts
    not recorded yet: those rows get their start (external id, node, log offset, time)
    in the same statement. Times are the executor's own readings when it gave them
    (else `now`), so that an attempt's start and end are as far apart as it ran."""
    started = started or {}
    outcomes_list = list(outcomes)
    plain: list[dict[str, Any]] = []
    with_start: list[dict[str, Any]] = []
    for o in outcomes_list:
        usage = o.usage or Usage()
        row = {
            "job": o.job_id,
            "number": o.attempt,
            "exit_code": o.exit_code,
            "signal": o.signal,
            "reason": o.reason[:500],
            "reason_code": o.reason_code or (reason_codes.SUCCEEDED if o.succeeded else reason_codes.INTERNAL_ERROR),
            "charged": o.charged,
            "end_time": at(o.time, now),
            "max_rss_mib": usage.max_rss_mib,
            "cpu_seconds": usage.cpu_seconds,
            "elapsed_seconds": usage.elapsed_seconds,
        }
        start = started.get((o.job_id, o.attempt))
        if start is None:
            plain.append(row)
        else:
            row.update(external_id=start.external_id, node=start.node, log_offset=start.log_offset, start_time=at(start.time, now))
            with_start.append(row)
    guard = {"worker": worker.pk} if worker is not None else {}
    _charge_usage(outcomes=outcomes_list, now=now, guard=guard)
    for rows in (plain, with_start):
        _update_from_rows(rows=rows, keys=("job", "number"), constant={"state": Attempt.State.ENDED.value}, live_only=True, guard=guard)
    for o in outcomes_list:
        if o.task_log is not None:  # a task's (one job per batch): one more statement, for tasks only
            Attempt.objects.filter(job_id=o.job_id, number=o.attempt, **guard).update(task_log=o.task_log)


def at(epoch: float | None, default: datetime) -> datetime:
    """An executor's clock reading (epoch seconds) as a time to store; `default` when it
    gave none, or one later than `default` (another machine's clock ahead of ours)."""
    if epoch is None:
        return default
    return min(datetime.fromtimestamp(epoch, tz=UTC), default)


def _update_from_rows(
    *, rows: list[dict[str, Any]], keys: tuple[str, ...], constant: dict[str, Any], live_only: bool, guard: dict[str, Any] | None = None
) -> None:
    """UPDATE attempt SET <per-row values and constants> FROM (SELECT ... UNION ALL ...) v
    WHERE the key columns match: one statement per chunk of rows, whatever their values."""
    if not rows:
        return
    conn = sql.default_connection()
    qn = conn.ops.quote_name
    table = sql.table(Attempt, conn)
    names = list(rows[0])
    set_parts = [f"{_column(name)} = v.{qn('v_' + name)}" for name in names if name not in keys]
    set_params: list[Any] = []
    for name, value in constant.items():
        set_parts.append(f"{_column(name)} = %s")
        set_params.append(value)
    where = [f"{table}.{_column(key)} = v.{qn('v_' + key)}" for key in keys]
    where_params: list[Any] = []
    if live_only:
        where.append(f"{table}.{_column('end_time')} IS NULL")
    for name, value in (guard or {}).items():
        where.append(f"{table}.{_column(name)} = %s")
        where_params.append(_prep(name, value))
    first = "SELECT " + ", ".join(f"{_typed(name)} AS {qn('v_' + name)}" for name in names)
    other = "SELECT " + ", ".join(_typed(name) for name in names)
    with conn.cursor() as cursor:
        for start in range(0, len(rows), sql.CHUNK):
            chunk = rows[start : start + sql.CHUNK]
            derived = " UNION ALL ".join([first] + [other] * (len(chunk) - 1))
            params = [*set_params, *(_prep(name, row[name]) for row in chunk for name in names), *where_params]
            cursor.execute(
                f"UPDATE {table} SET {', '.join(set_parts)} FROM ({derived}) AS v WHERE {' AND '.join(where)}",  # noqa: S608
                params,
            )


def reassign(*, attempts: Sequence[Attempt], to: Worker) -> list[Attempt]:
    """Move live attempts (and their jobs' `worker`) from stopped or lost workers to
    `to`, each only if still held by the worker it was read with (the rows are locked
    while they move). Returns those moved. A few statements per old worker and chunk,
    whatever the number of attempts."""
    by_worker: dict[Any, list[Attempt]] = {}
    for attempt in attempts:
        by_worker.setdefault(attempt.worker_id, []).append(attempt)
    moved: list[Attempt] = []
    with transaction.atomic():
        for old, group in by_worker.items():
            for start in range(0, len(group), sql.CHUNK):
                chunk = {attempt.pk: attempt for attempt in group[start : start + sql.CHUNK]}
                held = Attempt.objects.select_for_update().filter(pk__in=list(chunk), worker_id=old, end_time__isnull=True)
                ids = list(held.values_list("pk", flat=True))
                Attempt.objects.filter(pk__in=ids).update(worker=to)
                # A live attempt is its job's latest: the job follows it.
                Job.objects.filter(pk__in=[chunk[pk].job_id for pk in ids]).update(worker=to)
                moved.extend(chunk[pk] for pk in ids)
    return moved


def _charge_usage(*, outcomes: list[Outcome], now: datetime, guard: dict[str, Any]) -> None:
    """The attempts about to close, charged to their owners' fair-share usage (one
    query for them all; an attempt that never ran costs nothing)."""
    if not outcomes:
        return
    wanted = {(o.job_id, o.attempt) for o in outcomes}
    live = Attempt.objects.filter(job_id__in={o.job_id for o in outcomes}, end_time__isnull=True, **guard)
    rows = live.values_list("job_id", "number", "job__batch__owner_id", "job__batch__cpu", "start_time")
    fairshare.charge_ended_attempts(
        attempts=[(owner, cpus, start) for job_id, number, owner, cpus, start in rows if (str(job_id), number) in wanted], now=now
    )
