"""Claiming work: a worker takes RUNNABLE jobs that fit what it has room for, and gets
back what its executor needs to start each one (`AttemptSpec`). Every status change
goes through `jobs.transitions.transition`, every attempt row through `jobs.attempts`.

Claim: in one transaction, select RUNNABLE jobs that fit (in fair-share order, `FOR UPDATE
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
from core import reason_codes
from jobs import attempts as attempt_rows
from jobs import fairshare, sql
from jobs.dispatch import skip_scan
from jobs.executors.base import AttemptSpec, Capacity, Outcome, internal_error
from jobs.models import Attempt, Job, Worker
from jobs.policy import refusal
from jobs.statuses import Status
from jobs.transitions import transition

logger = logging.getLogger("jobs.claiming")


def claim_jobs(
    *, worker: Worker, room: Capacity, fits: Capacity, limit: int, exclude: Iterable[str] = ()
) -> tuple[list[AttemptSpec], list[Outcome]]:
    """Claim RUNNABLE jobs for `worker`, in fair-share order (`_claim_candidates`): each must fit `fits` (the largest
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
            room=room, fits=Capacity(min(fits.cpus, room.cpus), min(fits.memory_mib, room.memory_mib)), exclude=list(exclude), limit=limit
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
        # The specs go in the plan's order, which is the order they start in (a batch of
        # priority 10 before the rest); the attempt rows are written in key order.
        claimed = set(changed)
        rows = [row for pk, row in chosen.items() if pk in claimed]
        attempt_rows.open_attempts(
            worker=worker,
            executor=worker.executor,
            items=[(row.pk, row.attempts + 1, row.cpu, row.memory) for row in sorted(rows, key=lambda row: row.pk)],
            now=now,
        )
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
                    memory_mib=row.memory,
                    timeout_seconds=batch["timeout_seconds"],
                    filesystems=batch["filesystems"],
                    read_only=batch["read_only"],
                    run_as=row.run_as or "",
                    run_as_uid=row.run_as_uid,
                    max_running=row.max_running,
                    task=batch["task"],
                )
            )
        except Exception as exc:  # one broken job must not stop the others
            logger.exception("cannot describe job %s", row.pk)
            broken.append(
                Outcome(str(row.pk), row.attempts + 1, succeeded=False, reason=internal_error(exc), reason_code=reason_codes.INTERNAL_ERROR)
            )
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
    max_running: int | None


# At most this many batches with RUNNABLE jobs are weighed per claim (oldest first): one
# index probe each (`batches_with_jobs_in`), whatever the number of jobs in them.
_ACTIVE_BATCHES = 1000
# Rounds of planning per claim: a batch found to have fewer RUNNABLE jobs than planned
# (taken by another worker, or held by a live attempt) gives its slots to the next.
_PLAN_ROUNDS = 3


def _claim_candidates(*, room: Capacity, fits: Capacity, exclude: list[str], limit: int) -> list[_Candidate]:
    """RUNNABLE jobs to start, at most `limit`, within `room`, each fitting `fits`, in
    fair-share order (`jobs.fairshare`: the group and user furthest below their share
    first; inside a user's work, higher `priority` first, then older batches; each batch
    within its `max_running`), locked with FOR UPDATE SKIP LOCKED where the database has
    it (PostgreSQL), so concurrent workers take different rows without waiting; never a
    job with a live attempt. Where any job account exists, only jobs whose owner has one
    (the dispatcher gives them out, or holds the jobs back PENDING).

    The cost does not grow with the backlog: the batches that have RUNNABLE jobs with
    their rows (`_active_batches`: an index probe each, at most `_ACTIVE_BATCHES`, one
    query), the users' standings (`fairshare.snapshot`: three queries), then the next
    jobs of every batch the plan draws from, in one query (`_runnable_jobs`); again,
    for what is left, if a batch had fewer than planned."""
    batches = _active_batches(fits=fits)
    if not batches:
        return []
    accounts = _accounts_of({row["owner_id"] for row in batches.values()})
    if accounts is not None:
        batches = {pk: row for pk, row in batches.items() if row["owner_id"] in accounts}
    if not batches:
        return []
    seen = fairshare.snapshot(now=timezone.now())
    queues = [
        fairshare.BatchQueue(
            batch_id=pk,
            owner_id=row["owner_id"],
            cpu=row["cpu"],
            memory=row["memory"],
            priority=row["priority"],
            max_running=row["max_running"],
            running=seen.live_per_batch.get(pk, 0),
        )
        for pk, row in batches.items()
    ]
    ledger = fairshare.Ledger(users=seen.users, batches=queues)
    taken: list[_Candidate] = []
    skip = list(exclude)
    cpus, memory = room.cpus, room.memory_mib
    for _ in range(_PLAN_ROUNDS):
        picks = fairshare.plan(ledger, limit=limit - len(taken), cpus=cpus, memory_mib=memory)  # moves the ledger
        if not picks:
            break
        wanted: dict[Any, int] = {}
        for queue in picks:
            wanted[queue.batch_id] = wanted.get(queue.batch_id, 0) + 1
        found = _runnable_jobs(wanted=wanted, exclude=skip)
        short = False
        for queue in picks:  # in the plan's order
            rows = found[queue.batch_id]
            if not rows:
                ledger.untake(queue)  # planned, not started
                queue.available = 0  # none left: its slots go to others next round
                short = True
                continue
            pk, attempts, log_id, args, raised = rows.pop(0)
            owner = batches[queue.batch_id]["owner_id"]
            run_as, run_as_uid = accounts.get(owner, (None, None)) if accounts is not None else (None, None)
            # A retry rule may have raised this job's memory above its batch's.
            needs = raised or queue.memory
            taken.append(_Candidate(pk, queue.batch_id, attempts, log_id, args, queue.cpu, needs, run_as, run_as_uid, queue.max_running))
            skip.append(str(pk))
            cpus, memory = cpus - queue.cpu, memory - needs
        if not short:
            break
    return taken


def _active_batches(*, fits: Capacity) -> dict[Any, dict[str, Any]]:
    """The batches (oldest first, at most `_ACTIVE_BATCHES`) that have RUNNABLE jobs and
    whose jobs fit `fits`, not deleted nor being cancelled: id -> their owner_id, cpu,
    memory, priority and max_running. One statement: the skip scan of
    `jobs.dispatch.batches_with_jobs_in` joined to the batches' rows by primary key.
    On PostgreSQL each batch is looked up in a LATERAL subquery with LIMIT 1, which the
    planner cannot turn into another kind of join: without statistics on the batches it
    had compared every batch with every id found (a nested loop with a join filter,
    3,000 x 1,000 rows: 155 ms)."""
    conn = sql.default_connection()
    table = sql.table(Batch, conn)
    names = ("id", "owner", "cpu", "memory", "priority", "max_running")
    selected = ", ".join(f"{table}.{sql.column(Batch, name, conn)}" for name in names)
    conditions = (
        f"{table}.{sql.column(Batch, 'deleted_at', conn)} IS NULL AND {table}.{sql.column(Batch, 'cancel_requested_at', conn)} IS NULL"
        f" AND {table}.{sql.column(Batch, 'cpu', conn)} <= %s AND {table}.{sql.column(Batch, 'memory', conn)} <= %s"
    )
    batch_id = f"{table}.{sql.column(Batch, 'id', conn)}"
    if conn.vendor == "postgresql":
        query = (
            f"{skip_scan(conn)} SELECT r.* FROM b CROSS JOIN LATERAL"  # noqa: S608
            f" (SELECT {selected} FROM {table} WHERE {batch_id} = b.batch_id AND {conditions} LIMIT 1) AS r"
        )
    else:
        query = f"{skip_scan(conn)} SELECT {selected} FROM b INNER JOIN {table} ON {batch_id} = b.batch_id WHERE {conditions}"  # noqa: S608
    pk, owner = Batch._meta.pk, Batch._meta.get_field("owner").target_field
    with conn.cursor() as cursor:
        cursor.execute(query, [Status.RUNNABLE, Status.RUNNABLE, _ACTIVE_BATCHES, fits.cpus, fits.memory_mib])
        rows = cursor.fetchall()
    return {
        pk.to_python(batch_id): {
            "owner_id": owner.to_python(owner_id),
            "cpu": cpu,
            "memory": memory,
            "priority": priority,
            "max_running": max_running,
        }
        for batch_id, owner_id, cpu, memory, priority, max_running in rows
    }


def _accounts_of(owners: set[Any]) -> dict[Any, tuple[str, int]] | None:
    """Owner -> their job account (name, uid), or None where no job account exists (jobs
    then run as BATCHES_JOB_USER, or unsealed)."""
    if not JobAccount.objects.exists():
        return None
    rows = JobAccount.objects.filter(user_id__in=owners).values_list("user_id", "username", "uid")
    return {user_id: (username, uid) for user_id, username, uid in rows}


def _runnable_jobs(*, wanted: dict[Any, int], exclude: list[str]) -> dict[Any, list[tuple[Any, int, Any, Any, int | None]]]:
    """For each batch id of `wanted`, its next `n` RUNNABLE jobs in submission order
    (by `index`) that have no live attempt and are not in `exclude`, locked FOR UPDATE
    SKIP LOCKED where the database has it: (pk, attempts, log_id, args, memory_mib)
    each (memory_mib: what a retry rule raised it to, or None).

    One statement for all the batches: on PostgreSQL a LATERAL join over the (batch,
    n) pairs, elsewhere a UNION ALL of one SELECT per batch (at most `_UNION_CHUNK` per
    statement). Each batch's part is the ORM query

        Job.objects.filter(batch_id=.., status=RUNNABLE).exclude(pk__in=exclude)
        .exclude(Exists(live attempt)).order_by("index")
        .select_for_update(skip_locked=True).values_list(...)[:n]

    with identifiers from the models and every value a parameter; it walks the (batch,
    status, index) index from the batch's first RUNNABLE job, the only index that gives
    both conditions and the order, so it reads n entries however large the batch, with
    or without the planner's statistics. Plain SQL
    because the worker runs it on every claim and building it through the ORM cost
    several times more than running it."""
    found: dict[Any, list[tuple[Any, ...]]] = {batch_id: [] for batch_id in wanted}
    if not wanted:
        return found
    conn = sql.default_connection()
    job, attempt = Job._meta, Attempt._meta
    job_table, attempt_table = sql.table(Job, conn), sql.table(Attempt, conn)
    pk_field, batch_field = job.pk, job.get_field("batch")

    def column(table: str, meta: Any, name: str) -> str:
        return f"{table}.{sql.column(meta.model, name, conn)}"

    job_id, job_batch = column(job_table, job, "id"), column(job_table, job, "batch")
    names = ("index", "attempts", "log_id", "args", "memory_mib")
    selected = ", ".join([job_batch, job_id, *(column(job_table, job, name) for name in names)])
    live = (
        f"NOT EXISTS (SELECT 1 FROM {attempt_table} WHERE {column(attempt_table, attempt, 'job')} = {job_id}"  # noqa: S608
        f" AND {column(attempt_table, attempt, 'end_time')} IS NULL)"
    )
    order = f"ORDER BY {column(job_table, job, 'index')}"
    status = f"{column(job_table, job, 'status')} = %s"
    excluded = [sql.db_value(pk_field, pk, conn, save=False) for pk in exclude]
    batch_ids = list(wanted)
    statements: list[tuple[str, list[Any]]] = []
    if conn.vendor == "postgresql":
        pk_type, batch_type = pk_field.db_type(conn), batch_field.target_field.db_type(conn)
        not_excluded = f" AND NOT ({job_id} = ANY(%s::{pk_type}[]))" if excluded else ""
        query = (
            f"SELECT j.* FROM unnest(%s::{batch_type}[], %s::integer[]) AS w(batch_id, n)"  # noqa: S608 (identifiers from the models)
            f" CROSS JOIN LATERAL (SELECT {selected} FROM {job_table} WHERE {status} AND {job_batch} = w.batch_id{not_excluded}"
            f" AND {live} {order} LIMIT w.n FOR UPDATE OF {job_table} SKIP LOCKED) AS j"
        )
        params: list[Any] = [
            [sql.db_value(batch_field, b, conn, save=False) for b in batch_ids],
            [wanted[b] for b in batch_ids],
            Status.RUNNABLE,
        ]
        if excluded:
            params.append(excluded)
        statements.append((query, params))
    else:
        lock = f" FOR UPDATE OF {job_table} SKIP LOCKED" if conn.features.has_select_for_update else ""
        not_excluded = f" AND NOT ({job_id} IN ({sql.marks(excluded)}))" if excluded else ""
        part = (
            f"SELECT * FROM (SELECT {selected} FROM {job_table} WHERE {status} AND {job_batch} = %s{not_excluded}"  # noqa: S608
            f" AND {live} {order} LIMIT %s{lock})"
        )
        for start in range(0, len(batch_ids), _UNION_CHUNK):
            chunk = batch_ids[start : start + _UNION_CHUNK]
            params = []
            for batch_id in chunk:
                params += [Status.RUNNABLE, sql.db_value(batch_field, batch_id, conn, save=False), *excluded, wanted[batch_id]]
            statements.append((" UNION ALL ".join([part] * len(chunk)), params))
    args_field, log_field, batch_pk = job.get_field("args"), job.get_field("log_id"), batch_field.target_field
    with conn.cursor() as cursor:
        for query, params in statements:
            cursor.execute(query, params)
            for batch_id, pk, index, attempts, log_id, args, memory in cursor.fetchall():
                found[batch_pk.to_python(batch_id)].append(
                    (
                        index,
                        pk_field.to_python(pk),
                        attempts,
                        log_field.to_python(log_id),
                        args_field.from_db_value(args, None, conn),
                        memory,
                    )
                )
    return {batch_id: [row[1:] for row in sorted(rows, key=lambda row: row[0])] for batch_id, rows in found.items()}


# Batches per UNION ALL statement where there is no LATERAL (SQLite allows 500 parts).
_UNION_CHUNK = 50


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
            "task": batch.task,
        }
        _SPEC_CACHE[batch.pk] = specs[batch.pk]
    while len(_SPEC_CACHE) > _SPEC_CACHE_SIZE:
        del _SPEC_CACHE[next(iter(_SPEC_CACHE))]
    return specs
