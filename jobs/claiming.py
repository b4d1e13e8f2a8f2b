"""Claiming work: a worker takes RUNNABLE jobs that fit what it has room for, and gets
back what its executor needs to start each one (`AttemptSpec`). Every status change
goes through `jobs.transitions.transition`, every attempt row through `jobs.attempts`.

Claim: in one transaction, select RUNNABLE jobs that fit (oldest first, `FOR UPDATE
SKIP LOCKED` on PostgreSQL, so concurrent workers take different rows without waiting;
never a job that still has a live attempt), then a conditional RUNNABLE -> STARTING
update that sets the worker and increments `attempts`, then one attempt row per job.
Only the ids that update changed are started, so even without row locks (SQLite, where
the IMMEDIATE transaction serialises writers) no job is started twice; and the database
refuses a second live attempt row for a job.
"""

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import JobAccount
from batches.models import Batch
from batches.parameters import render_argv
from jobs import attempts as attempt_rows
from jobs import sql
from jobs.executors.base import AttemptSpec, Capacity, Outcome, internal_error
from jobs.models import Attempt, Job, Worker
from jobs.policy import refusal
from jobs.statuses import Status
from jobs.transitions import transition

logger = logging.getLogger("jobs.claiming")


def claim_jobs(
    *, worker: Worker, room: Capacity, fits: Capacity, limit: int, exclude: Iterable[str] = ()
) -> tuple[list[AttemptSpec], list[Outcome]]:
    """Claim RUNNABLE jobs for `worker`, oldest first: each must fit `fits` (the largest
    job the executor runs) and together they fit in `room`, at most `limit` of them. Each
    becomes STARTING with `attempts` incremented and a LAUNCHING attempt row. `exclude`
    lists jobs whose previous attempt this worker is still stopping.

    Returns what to start, and the Outcome of each claimed job whose attempt could not
    even be described (a tool whose stored command is broken...): those fail with
    `internal error: ...` when recorded, and the others go on. A worker that cannot
    seal jobs where the deployment requires it claims nothing (`jobs.policy`). Runs in
    the caller's transaction if there is one, else in its own."""
    if limit < 1 or room.cpus < 1 or room.memory_mib < 1 or refusal(worker):
        return [], []
    with transaction.atomic(savepoint=False):
        candidates = _claim_candidates(
            fits=Capacity(min(fits.cpus, room.cpus), min(fits.memory_mib, room.memory_mib)), exclude=list(exclude), limit=limit
        )
        chosen, cpus, memory = {}, room.cpus, room.memory_mib
        for row in candidates:
            if row.cpu <= cpus and row.memory <= memory:
                chosen[row.pk] = row
                cpus, memory = cpus - row.cpu, memory - row.memory
        if not chosen:
            return [], []
        now = timezone.now()
        changed = transition(
            job_ids=list(chosen),
            from_statuses=[Status.RUNNABLE],
            to_status=Status.STARTING,
            reason=f"Placed on worker {worker.name}",
            now=now,
            worker=worker,
            attempts=F("attempts") + 1,
        )
        # The candidate rows were locked (FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
        # transaction holds the whole database) from their SELECT to the UPDATE, so what
        # they say is what was claimed, and the attempt is the one the UPDATE counted.
        rows = sorted((chosen[pk] for pk in changed), key=lambda row: row.pk)
        attempt_rows.open_attempts(worker=worker, executor=worker.executor, items=[(row.pk, row.attempts + 1) for row in rows], now=now)
    return _specs(rows)


def _specs(rows: list["_Candidate"]) -> tuple[list[AttemptSpec], list[Outcome]]:
    specs: list[AttemptSpec] = []
    broken: list[Outcome] = []
    batches = _batch_specs({row.batch_id for row in rows})
    for row in rows:
        try:
            batch = batches[row.batch_id]
            specs.append(
                AttemptSpec(
                    job_id=str(row.pk),
                    batch_id=str(row.batch_id),
                    attempt=row.attempts + 1,
                    log_id=str(row.log_id),
                    argv=render_argv(batch["command"], row.args),
                    cpu=batch["cpu"],
                    memory_mib=batch["memory"],
                    timeout_seconds=batch["timeout_seconds"],
                    filesystems=batch["filesystems"],
                    read_only=batch["read_only"],
                    run_as=row.run_as or "",
                    run_as_uid=row.run_as_uid,
                )
            )
        except Exception as exc:  # one broken job must not stop the others
            logger.exception("cannot describe job %s", row.pk)
            broken.append(Outcome(str(row.pk), row.attempts + 1, succeeded=False, reason=internal_error(exc)))
    return specs, broken


class _Candidate(NamedTuple):
    pk: Any
    batch_id: Any
    attempts: int
    log_id: Any
    args: Any
    cpu: int
    memory: int
    run_as: str | None  # the owner's job account
    run_as_uid: int | None


def _claim_candidates(*, fits: Capacity, exclude: list[str], limit: int) -> list[_Candidate]:
    """RUNNABLE jobs whose batch fits in `fits` and that have no live attempt, oldest
    first (oldest batch first, in order within it: ids are time-ordered), at most `limit`, locked with FOR UPDATE SKIP LOCKED where the database has it
    (PostgreSQL), so concurrent workers take different rows without waiting.

    Plain SQL because the worker runs it on every claim and building it through the ORM
    cost several times more than running it; it is the ORM query

        Job.objects.filter(status=RUNNABLE, batch__cpu__lte=.., batch__memory__lte=..)
        .exclude(pk__in=exclude).exclude(Exists(live attempt)).order_by("batch", "id")
        .select_for_update(skip_locked=True, of=("self",)).values_list(...)[:limit]

    with identifiers from the models and every value a parameter, and the owner's job
    account (`run_as`). Where any job account exists, only jobs whose owner has one
    (the dispatcher gives them out, or holds the jobs back PENDING)."""
    conn = sql.default_connection()
    job, batch, attempt, account = Job._meta, Batch._meta, Attempt._meta, JobAccount._meta
    job_table, batch_table, attempt_table = sql.table(Job, conn), sql.table(Batch, conn), sql.table(Attempt, conn)
    account_table = sql.table(JobAccount, conn)
    pk_field = job.pk

    def column(table: str, meta: Any, name: str) -> str:
        return f"{table}.{sql.column(meta.model, name, conn)}"

    job_id = column(job_table, job, "id")
    selected = ", ".join(
        [job_id, column(job_table, job, "batch"), column(job_table, job, "attempts"), column(job_table, job, "log_id")]
        + [column(job_table, job, "args"), column(batch_table, batch, "cpu"), column(batch_table, batch, "memory")]
        + [column(account_table, account, "username"), column(account_table, account, "uid")]
    )
    params: list[Any] = [Status.RUNNABLE, fits.cpus, fits.memory_mib]
    not_excluded = ""
    if exclude:
        not_excluded = f" AND NOT ({job_id} IN ({sql.marks(exclude)}))"
        params += [sql.db_value(pk_field, pk, conn, save=False) for pk in exclude]
    lock = ""
    if conn.features.has_select_for_update:
        lock = f" FOR UPDATE OF {job_table} SKIP LOCKED"
    query = (
        f"SELECT {selected} FROM {job_table}"  # noqa: S608 (identifiers from the models; values are parameters)
        f" INNER JOIN {batch_table} ON ({column(job_table, job, 'batch')} = {column(batch_table, batch, 'id')})"
        f" LEFT OUTER JOIN {account_table} ON ({column(account_table, account, 'user')} = {column(batch_table, batch, 'owner')})"
        f" WHERE {column(job_table, job, 'status')} = %s AND {column(batch_table, batch, 'cpu')} <= %s"
        f" AND {column(batch_table, batch, 'memory')} <= %s AND {column(batch_table, batch, 'deleted_at')} IS NULL"
        f" AND {column(batch_table, batch, 'cancel_requested_at')} IS NULL{not_excluded}"
        f" AND ({column(account_table, account, 'id')} IS NOT NULL OR NOT EXISTS (SELECT 1 FROM {account_table}))"
        f" AND NOT EXISTS (SELECT 1 FROM {attempt_table} WHERE {column(attempt_table, attempt, 'job')} = {job_id}"
        f" AND {column(attempt_table, attempt, 'end_time')} IS NULL)"
        f" ORDER BY {column(job_table, job, 'batch')} ASC, {job_id} ASC LIMIT %s{lock}"
    )
    params.append(limit)
    args_field = job.get_field("args")
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        return [
            _Candidate(
                pk=pk_field.to_python(pk),
                batch_id=batch.pk.to_python(batch_id),
                attempts=attempts,
                log_id=job.get_field("log_id").to_python(log_id),
                args=args_field.from_db_value(args, None, conn),
                cpu=cpu,
                memory=memory,
                run_as=run_as,
                run_as_uid=run_as_uid,
            )
            for pk, batch_id, attempts, log_id, args, cpu, memory, run_as, run_as_uid in cursor.fetchall()
        ]


# A batch's command, hardware and filesystems never change once submitted (the command
# is copied from the tool at submission): workers keep what they read (bounded, oldest
# dropped first).
_SPEC_CACHE: dict[Any, dict[str, Any]] = {}
_SPEC_CACHE_SIZE = 256


def _batch_specs(batch_ids: set[Any]) -> dict[Any, dict[str, Any]]:
    specs = {pk: _SPEC_CACHE[pk] for pk in batch_ids if pk in _SPEC_CACHE}
    missing = batch_ids - set(specs)
    if not missing:
        return specs
    for batch in Batch.objects.filter(pk__in=missing).prefetch_related("filesystems"):
        specs[batch.pk] = {
            "command": batch.command,
            "cpu": batch.cpu,
            "memory": batch.memory,
            "timeout_seconds": batch.timeout_seconds,
            "filesystems": {fs.name: fs.path for fs in batch.filesystems.all()},
            "read_only": tuple(fs.name for fs in batch.filesystems.all() if fs.read_only),
        }
        _SPEC_CACHE[batch.pk] = specs[batch.pk]
    while len(_SPEC_CACHE) > _SPEC_CACHE_SIZE:
        del _SPEC_CACHE[next(iter(_SPEC_CACHE))]
    return specs
