"""What users and operators do to jobs: cancel and retry, and the bulk insert of a
batch's jobs. Status changes go through `jobs.transitions.transition`; workers learn of
a cancel by the job's cancel request (`request_cancel`; and, on PostgreSQL, are woken to
look at once)."""

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from batches.models import Batch
from core.ids import uuid7
from jobs import sql
from jobs.counts import status_counts
from jobs.models import Job
from jobs.selectors import has_live_attempt, holding_an_attempt
from jobs.statuses import CANCELLED_REASON, HELD, LIVE, QUEUED, UNFINISHED, Status
from jobs.transitions import transition
from jobs.wakeup import notify_work


class CancelStillStopping(Exception):
    """A retry asked for while some jobs of the selection are still being cancelled."""

    def __init__(self, *, stopping: int, to_cancel: int) -> None:
        waiting = []
        if to_cancel:
            waiting.append(f"{to_cancel} job(s) are still to be cancelled (the batch's cancel goes on in the background)")
        if stopping:
            waiting.append(f"{stopping} job(s) are still stopping after a cancel")
        super().__init__(f"{'; '.join(waiting)}; retry once they are FAILED (Cancelled by user)")
        self.count = stopping + to_cancel


@dataclass(frozen=True)
class CancelResult:
    cancelled: int  # queued jobs, FAILED `Cancelled by user` at once
    stopping: int  # live jobs asked to stop; FAILED once their attempt has stopped

    @property
    def changed(self) -> int:
        return self.cancelled + self.stopping


def cancel_jobs(*, jobs: QuerySet[Job], by: Any = None, reason: str = CANCELLED_REASON) -> CancelResult:
    """Cancel every unfinished job of `jobs` (finished ones are left as they are).

    A queued job (no live attempt) is FAILED with `reason` at once. A live job
    (STARTING, RUNNING) gets a cancel request, recording `by` and the time: its worker
    stops the attempt and only then records FAILED `Cancelled by user`, so a retry can
    never start a second attempt beside the one still stopping. Idempotent."""
    now = timezone.now()
    with transaction.atomic():
        # Queued: no attempt anywhere. A RUNNABLE job whose attempt waits in a cluster's
        # queue is live: its attempt must be stopped first.
        queued = list(jobs.filter(status__in=QUEUED).exclude(has_live_attempt()).values_list("pk", flat=True))
        cancelled = transition(
            job_ids=queued,
            from_statuses=QUEUED,
            to_status=Status.FAILED,
            reason=reason,
            now=now,
            cancel_requested_at=now,
            cancel_requested_by=by,
        )
        # After the queued ones: a job claimed meanwhile is live by now and asked here.
        live = list(jobs.filter(holding_an_attempt()).values_list("pk", flat=True))
        stopping = request_cancel(job_ids=live, by=by, now=now)
        if stopping:
            notify_work()
    return CancelResult(cancelled=len(cancelled), stopping=len(stopping))


CANCEL_PENDING_REASON = "Cancel requested; waiting for the attempt to stop"


def request_cancel(*, job_ids: Iterable[Any], by: Any = None, now: datetime | None = None) -> list[Any]:
    """Ask for the live attempts (STARTING, RUNNING, or RUNNABLE waiting in a cluster's
    queue) of `job_ids` to be stopped: record who asked and when, and say so in
    `reason`. The status does not change here: the job becomes FAILED `Cancelled by
    user` once its worker confirms the attempt has stopped
    (`jobs.recording.record_outcomes`). Returns the ids asked for the first time."""

    now = now or timezone.now()
    ids = list(job_ids)
    changed: list[Any] = []
    for start in range(0, len(ids), sql.CHUNK):
        chunk = ids[start : start + sql.CHUNK]
        pending = Job.objects.filter(holding_an_attempt(), pk__in=chunk)
        found = list(pending.filter(cancel_requested_at__isnull=True).values_list("pk", flat=True))
        if found:
            Job.objects.filter(pk__in=found, status__in=HELD, cancel_requested_at__isnull=True).update(
                cancel_requested_at=now, cancel_requested_by=by, reason=CANCEL_PENDING_REASON
            )
            changed.extend(found)
    return changed


# Jobs cancelled per transaction when a whole batch is cancelled.
CANCEL_CHUNK = 5000


def cancel_batch(*, batch: Batch, by: Any = None, chunk: int = CANCEL_CHUNK) -> CancelResult:
    """Cancel every unfinished job of `batch`, in bounded work whatever its size.

    The batch is marked (no worker claims its jobs from then on) and one chunk of its
    jobs (`chunk`) is cancelled here, as `cancel_jobs` does; the housekeeping cancels the
    rest (`advance_batch_cancels`), and clears the mark when none is left to cancel. Returns
    the jobs concerned: all the batch's unfinished jobs, of which `stopping` are
    running (they are FAILED once their attempts have stopped)."""
    now = timezone.now()
    with transaction.atomic():
        lock_rows(Batch.objects.filter(pk=batch.pk))  # after a retry under way (retry_failed_jobs)
        marked = Batch.objects.filter(pk=batch.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=now, cancel_requested_by=by)
        counts = status_counts(batch=batch)
        # Running jobs not yet asked to stop (a few: as many as run at once). One asked by
        # an earlier cancel, and still stopping, is no change of this one.
        live = Job.objects.filter(batch=batch, status__in=LIVE, cancel_requested_at__isnull=True).count()
        notify_work()
    advance_batch_cancels(budget=chunk, chunk=chunk, batch_ids=[batch.pk])
    # A repeat while the first cancel goes on changes nothing new: the queued jobs it
    # counted are already on their way to FAILED.
    queued = sum(counts[status.lower()] for status in QUEUED) if marked else 0
    return CancelResult(cancelled=queued, stopping=live)


def advance_batch_cancels(*, budget: int = CANCEL_CHUNK, chunk: int = CANCEL_CHUNK, batch_ids: list[Any] | None = None) -> int:
    """Go on with the cancels of whole batches: up to `budget` jobs, `chunk` per
    transaction (queued jobs FAILED `Cancelled by user`, running ones asked to stop).
    A batch with nothing left to cancel loses its mark. Returns jobs changed."""
    cancelling = Batch.objects.filter(cancel_requested_at__isnull=False)
    if batch_ids is not None:
        cancelling = cancelling.filter(pk__in=batch_ids)
    changed = 0
    for batch_id, by in cancelling.order_by("cancel_requested_at").values_list("pk", "cancel_requested_by")[:100]:
        while changed < budget:
            size = min(chunk, budget - changed)
            pending = Job.objects.filter(batch_id=batch_id).filter(status__in=UNFINISHED, cancel_requested_at__isnull=True)
            ids = list(pending.order_by("pk").values_list("pk", flat=True)[:size])
            if not ids:
                Batch.objects.filter(pk=batch_id).update(cancel_requested_at=None, cancel_requested_by=None)
                break
            # At least len(ids) towards the budget: jobs another writer moved meanwhile
            # must not keep this loop going.
            changed += max(cancel_jobs(jobs=Job.objects.filter(pk__in=ids), by=by).changed, len(ids))
        if changed >= budget:
            break
    return changed


def retry_failed_jobs(*, jobs: QuerySet[Job]) -> int:
    """Put the FAILED jobs of `jobs` back to RUNNABLE for a new attempt, with a fresh
    `max_attempts` (and no requeues, the memory as submitted); jobs in any other state
    are untouched. Refused with
    CancelStillStopping while a job of `jobs` has a cancel whose attempt has not stopped
    yet. Returns how many changed.

    Ordered with a batch's cancel by the batch rows (`lock_rows`): a cancel sent while
    a large retry commits waits for it and then cancels what it made runnable (it used to
    see every job still FAILED, and the retried batch ran whole)."""
    with transaction.atomic():
        # A batch's retry and cancel take its row first, so one waits for the other.
        lock_rows(Batch.objects.filter(pk__in=jobs.values("batch_id")))
        stopping = jobs.filter(status__in=HELD, cancel_requested_at__isnull=False).count()
        to_cancel = jobs.filter(status__in=UNFINISHED, cancel_requested_at__isnull=True, batch__cancel_requested_at__isnull=False).count()
        if stopping or to_cancel:
            raise CancelStillStopping(stopping=stopping, to_cancel=to_cancel)
        ids = list(jobs.filter(status=Status.FAILED).values_list("pk", flat=True))
        changed = transition(
            job_ids=ids,
            from_statuses=[Status.FAILED],
            to_status=Status.RUNNABLE,
            reason="Retry requested by user",
            exit_code=None,
            charged_attempts=0,
            requeues=0,
            memory_mib=None,
            cancel_requested_at=None,
            cancel_requested_by=None,
        )
        if changed:
            notify_work()
    return len(changed)


def lock_rows(rows: QuerySet) -> None:
    """Lock `rows` (jobs, batches...) until the end of the caller's transaction, in id
    order (as every writer locks them), without fetching them. SQLite needs nothing: its
    write transaction already holds the whole database."""
    conn = connections[router.db_for_write(rows.model)]
    if not conn.features.has_select_for_update:
        return
    query, params = rows.order_by("pk").values("pk").query.sql_with_params()
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({query} FOR UPDATE) AS locked", params)  # noqa: S608 (the ORM's own SQL)


# Rows per INSERT statement when creating jobs.
_INSERT_ROWS = 2000
# Columns that differ from row to row; every other column takes one value for the batch.
_PER_ROW = ("id", "index", "args", "log_id")


def create_jobs(*, batch: Batch, arguments: Sequence[dict[str, str]]) -> int:
    """Insert one SUBMITTED job per argument set (`index` is its position), all created
    at the batch's create_time: one COPY on PostgreSQL, else 2,000 rows per INSERT.
    Returns how many. Jobs are born SUBMITTED (the model's default): no transition, no
    event.

    Written in SQL because the ORM's bulk_create spent ten times the database's time
    building model instances for a large batch. Values are converted by the model's own
    fields, so they are stored exactly as the ORM would store them.
    """
    conn = connections[router.db_for_write(Job)]
    if conn.vendor == "postgresql":
        return _copy_jobs(conn=conn, batch=batch, arguments=arguments)
    fields = list(Job._meta.concrete_fields)
    constants = _constants(batch=batch, conn=conn, fields=fields)
    per_row_fields = [Job._meta.get_field(name) for name in _PER_ROW]
    rows_per_insert = _rows_per_insert(conn, len(fields))
    qn = conn.ops.quote_name
    insert = f"INSERT INTO {sql.table(Job, conn)} ({', '.join(qn(field.column) for field in fields)})"
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        for start in range(0, len(arguments), rows_per_insert):
            chunk = arguments[start : start + rows_per_insert]
            columns: dict[str, list[Any]] = {
                "id": [uuid7() for _ in chunk],
                "index": list(range(start, start + len(chunk))),
                "args": list(chunk),
                "log_id": [uuid7() for _ in chunk],
            }
            for field in per_row_fields:
                columns[field.name] = [sql.db_value(field, value, conn) for value in columns[field.name]]
            params = [columns[f.name][i] if f.name in _PER_ROW else constants[f.name] for i in range(len(chunk)) for f in fields]
            cursor.execute(f"{insert} VALUES {sql.rows(len(fields), len(chunk))}", params)
    return len(arguments)


def _constants(*, batch: Batch, conn: Any, fields: list[Any]) -> dict[str, Any]:
    """The value of every column that is the same for all the batch's jobs, converted
    by its field as the ORM would."""
    fixed = {"batch": batch.pk, "create_time": batch.create_time}
    constants: dict[str, Any] = {}
    for field in fields:
        if field.name in _PER_ROW:
            continue
        if field.name not in fixed and field.has_default() and callable(field.default):
            # A callable default (a fresh id, the time now) differs per row: it must be
            # listed in _PER_ROW or fixed above, not silently shared by every job.
            raise RuntimeError(f"create_jobs does not know how to fill Job.{field.name}")
        value = fixed[field.name] if field.name in fixed else field.get_default()
        constants[field.name] = sql.db_value(field, value, conn)
    return constants


def _copy_jobs(*, conn: Any, batch: Batch, arguments: Sequence[dict[str, str]]) -> int:
    """`create_jobs` on PostgreSQL: one COPY, the server's fastest way in (its INSERT
    spent most of a 100,000-job submission turning parameters into text, twice). The
    constant columns are converted by the model's fields as for INSERT; the per-row ones
    are plain values psycopg writes itself (UUIDs, integers, JSON text)."""
    fields = list(Job._meta.concrete_fields)
    constants = _constants(batch=batch, conn=conn, fields=fields)
    qn = conn.ops.quote_name
    columns = ", ".join(qn(field.column) for field in fields)
    positions = {name: i for i, name in enumerate(field.name for field in fields)}
    template = [constants.get(field.name) for field in fields]
    slots = [positions[name] for name in _PER_ROW]
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    with (
        transaction.atomic(using=conn.alias),
        conn.cursor() as cursor,
        cursor.copy(f"COPY {sql.table(Job, conn)} ({columns}) FROM STDIN") as copy,
    ):
        for index, args in enumerate(arguments):
            row = template.copy()
            row[slots[0]], row[slots[1]], row[slots[2]], row[slots[3]] = uuid7(), index, dumps(args), uuid7()
            copy.write_row(row)
    return len(arguments)


def _rows_per_insert(conn: Any, columns: int) -> int:
    """2,000 rows, or what fits under SQLite's limit on bound parameters."""
    if conn.vendor != "sqlite":
        return _INSERT_ROWS
    conn.ensure_connection()
    limit = conn.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(_INSERT_ROWS, limit // columns))
