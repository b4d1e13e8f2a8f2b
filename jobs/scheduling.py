"""The database side of running jobs: workers and their leases, placing SUBMITTED jobs,
claiming RUNNABLE ones, recording how attempts ended, and recovering the jobs of lost
workers. Plain functions, backend-agnostic; every status change goes through
`jobs.states.transition`, guarded by the worker and attempt it concerns.

Claim: in one transaction, select RUNNABLE jobs that fit the worker's free capacity,
oldest first, `FOR UPDATE SKIP LOCKED` on PostgreSQL (so concurrent workers take
different rows without waiting), then a conditional RUNNABLE -> STARTING update that
sets the worker and increments `attempts`. Only the ids that update changed are started,
so even without row locks (SQLite, where the IMMEDIATE transaction serialises writers)
no job is started twice.
"""

import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from batches.models import Batch
from batches.parameters import render_argv
from jobs.executors.base import Attempt, Capacity, Outcome
from jobs.executors.procs import boot_id, process_alive, process_start_time
from jobs.models import Job, Worker
from jobs.states import LIVE, Status, transition

WORKER_LOST = "worker lost"
# One sweep places at most this many SUBMITTED jobs: short transactions, and the next
# sweep goes on.
_DISPATCH_LIMIT = 5000


# -- workers and leases -----------------------------------------------------------------
def register_worker(*, executor: str, capacity: Capacity, lease_seconds: float) -> Worker:
    """A new ACTIVE worker row for this process, with a lease of `lease_seconds`."""
    now = timezone.now()
    pid = os.getpid()
    node = socket.gethostname()
    return Worker.objects.create(
        name=f"{node}:{pid}",
        executor=executor,
        node=node,
        boot_id=boot_id(),
        pid=pid,
        pid_start=process_start_time(pid),
        cpus=capacity.cpus,
        memory_mib=capacity.memory_mib,
        started_at=now,
        heartbeat_at=now,
        lease_expires=now + timedelta(seconds=lease_seconds),
    )


def renew_lease(*, worker: Worker, lease_seconds: float) -> bool:
    """Extend the worker's lease. False if the worker is no longer ACTIVE (another
    worker declared it lost): its attempts must then be stopped and not reported."""
    now = timezone.now()
    expires = now + timedelta(seconds=lease_seconds)
    changed = Worker.objects.filter(pk=worker.pk, state=Worker.State.ACTIVE).update(heartbeat_at=now, lease_expires=expires)
    if changed:
        worker.heartbeat_at, worker.lease_expires = now, expires
    return bool(changed)


def stop_worker(*, worker: Worker) -> None:
    """Mark the worker STOPPED (a clean exit; its attempts were already requeued)."""
    Worker.objects.filter(pk=worker.pk, state=Worker.State.ACTIVE).update(state=Worker.State.STOPPED, stopped_at=timezone.now())


def expire_dead_local_workers(*, worker: Worker) -> int:
    """End the lease now of ACTIVE workers on this same machine (same boot) whose process
    is gone: a restarted worker need not wait a full lease to recover them. Returns how
    many."""
    now = timezone.now()
    dead = [
        other.pk
        for other in Worker.objects.filter(state=Worker.State.ACTIVE, node=worker.node, lease_expires__gt=now).exclude(pk=worker.pk)
        if other.boot_id != worker.boot_id or not process_alive(other.pid or 0, other.pid_start)
    ]
    if dead:
        Worker.objects.filter(pk__in=dead, state=Worker.State.ACTIVE).update(lease_expires=now)
    return len(dead)


def worker_is_dead(worker_id: str) -> bool:
    """For executors cleaning up: the worker is one of ours (in this database) and is not
    ACTIVE, or its lease has run out. An unknown id belongs to another deployment (or
    test run) on the same machine, whose processes are not ours to kill."""
    try:
        row = Worker.objects.filter(pk=worker_id).values_list("state", "lease_expires").first()
    except (ValueError, ValidationError):
        return False
    if row is None:
        return False
    state, expires = row
    return state != Worker.State.ACTIVE or expires <= timezone.now()


def recover_lost_workers(*, now: Any = None) -> int:
    """Declare LOST every ACTIVE worker whose lease has run out, and requeue its live
    attempts: back to RUNNABLE if the job has attempts left, else FAILED `worker lost`.
    Safe to run from many workers at once (each lost worker is claimed by one
    conditional update). Returns how many jobs were recovered."""
    now = now or timezone.now()
    recovered = 0
    for lost in Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__lt=now):
        with transaction.atomic():
            claimed = Worker.objects.filter(pk=lost.pk, state=Worker.State.ACTIVE, lease_expires__lt=now).update(
                state=Worker.State.LOST, stopped_at=now
            )
            if claimed:
                recovered += _requeue_worker_jobs(worker=lost, reason=WORKER_LOST)
    return recovered


def _requeue_worker_jobs(*, worker: Worker, reason: str) -> int:
    jobs = Job.objects.filter(worker=worker, status__in=LIVE)
    retry = list(jobs.filter(attempts__lt=F("batch__max_attempts")).values_list("pk", "attempts"))
    give_up = list(jobs.exclude(attempts__lt=F("batch__max_attempts")).values_list("pk", flat=True))
    changed = 0
    guard = Q(worker=worker)
    by_attempt: dict[int, list[Any]] = defaultdict(list)
    for pk, attempts in retry:
        by_attempt[attempts].append(pk)
    for attempts, ids in by_attempt.items():
        changed += len(
            transition(
                job_ids=ids,
                from_statuses=LIVE,
                to_status=Status.RUNNABLE,
                reason=f"Attempt {attempts} failed ({reason}); waiting to retry",
                guard=guard,
                exit_code=None,
            )
        )
    changed += len(transition(job_ids=give_up, from_statuses=LIVE, to_status=Status.FAILED, reason=reason, guard=guard, exit_code=None))
    return changed


# -- placing SUBMITTED jobs -------------------------------------------------------------
def _live_capacities(*, now: Any) -> list[tuple[int, int]]:
    return list(Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__gt=now).values_list("cpus", "memory_mib"))


def dispatch_submitted(*, limit: int = _DISPATCH_LIMIT) -> int:
    """Move SUBMITTED jobs on, and PENDING jobs whose wait is over. Returns how many moved.

    A job becomes RUNNABLE when some live worker is large enough for its batch's cpu and
    memory and its owner is under BATCHES_USER_MAX_ACTIVE_JOBS (jobs RUNNABLE, STARTING
    or RUNNING; 0 means no quota). Otherwise a SUBMITTED job becomes PENDING with a
    reason naming what it waits for: a worker large enough, or a place in its owner's
    quota. Jobs are taken in submission order within a batch, oldest batches first.

    One worker dispatches at a time, in one transaction; the others skip their turn
    (returning 0). Two dispatchers updating the same hundreds of rows deadlock on
    PostgreSQL, and each would count the quota without seeing the other's moves.
    """
    with transaction.atomic():
        if not _take_dispatch_lock():
            return 0
        return _dispatch(limit=limit)


# pg_try_advisory_xact_lock key of the dispatcher ("disp" in ASCII).
_DISPATCH_LOCK_KEY = 0x64697370


def _take_dispatch_lock() -> bool:
    """On PostgreSQL, a transaction-scoped advisory lock, or False if another worker
    holds it. SQLite needs none: the IMMEDIATE transaction already serialises writers."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_DISPATCH_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _dispatch(*, limit: int) -> int:
    now = timezone.now()
    capacities = _live_capacities(now=now)
    quota = settings.BATCHES_USER_MAX_ACTIVE_JOBS
    room: dict[Any, int] = {}
    moved = 0
    for source in (Status.SUBMITTED, Status.PENDING):
        batch_ids = list(Job.objects.filter(status=source).order_by("batch_id").values_list("batch_id", flat=True).distinct()[:100])
        batches = list(Batch.objects.filter(pk__in=batch_ids).only("id", "owner_id", "cpu", "memory").order_by("id"))
        if quota:
            _fill_quota_room(room, owners={b.owner_id for b in batches} - set(room), quota=quota)
        for batch in batches:
            if moved >= limit:
                return moved
            fits = any(cpu >= batch.cpu and memory >= batch.memory for cpu, memory in capacities)
            if source == Status.PENDING and not fits:
                continue
            ids = list(Job.objects.filter(batch=batch, status=source).values_list("pk", flat=True)[: limit - moved])
            if not fits:
                largest = max(capacities, default=None)
                have = f"the largest live worker has {largest[0]} cpu and {largest[1]} MiB" if largest else "no worker is running"
                reason = f"No worker can run it: needs {batch.cpu} cpu and {batch.memory} MiB; {have}"
                moved += len(transition(job_ids=ids, from_statuses=[source], to_status=Status.PENDING, reason=reason))
                continue
            runnable, over = (ids, []) if not quota else (ids[: max(room[batch.owner_id], 0)], ids[max(room[batch.owner_id], 0) :])
            if runnable:
                reason = f"Waiting for a worker with {batch.cpu} free cpu and {batch.memory} MiB"
                changed = len(transition(job_ids=runnable, from_statuses=[source], to_status=Status.RUNNABLE, reason=reason))
                moved += changed
                if quota:
                    room[batch.owner_id] -= changed
            if over and source == Status.SUBMITTED:
                reason = f"Over your quota: at most {quota} of your jobs may be queued or running at once; waiting for one to finish"
                moved += len(transition(job_ids=over, from_statuses=[source], to_status=Status.PENDING, reason=reason))
    return moved


def _fill_quota_room(room: dict[Any, int], *, owners: set[Any], quota: int) -> None:
    """room[owner] = how many more of the owner's jobs may become RUNNABLE (one query)."""
    if not owners:
        return
    active = dict(
        Job.objects.filter(batch__owner_id__in=owners, status__in=[Status.RUNNABLE, *LIVE])
        .order_by()
        .values_list("batch__owner_id")
        .annotate(n=Count("pk"))
    )
    for owner in owners:
        room[owner] = quota - active.get(owner, 0)


# -- claiming and recording -------------------------------------------------------------
def claim_jobs(*, worker: Worker, free: Capacity, exclude: Iterable[str] = (), limit: int = 64) -> list[Attempt]:
    """Claim RUNNABLE jobs that fit in `free` (oldest first) for `worker`: each becomes
    STARTING with `attempts` incremented. Returns what to start, one Attempt per job
    this call changed; a job another worker took first is simply not in the list.
    `exclude` lists jobs whose previous attempt this worker is still stopping.

    Runs in the caller's transaction if there is one (the worker records what happened
    and claims in one), else in its own."""
    if free.cpus < 1 or free.memory_mib < 1:
        return []
    with transaction.atomic(savepoint=False):
        candidates = _claim_candidates(free=free, exclude=list(exclude), limit=min(limit, free.cpus))
        chosen, cpus, memory = {}, free.cpus, free.memory_mib
        for row in candidates:
            if row.cpu <= cpus and row.memory <= memory:
                chosen[row.pk] = row
                cpus, memory = cpus - row.cpu, memory - row.memory
        if not chosen:
            return []
        changed = transition(
            job_ids=list(chosen),
            from_statuses=[Status.RUNNABLE],
            to_status=Status.STARTING,
            reason=f"Placed on worker {worker.name}",
            worker=worker,
            attempts=F("attempts") + 1,
        )
    # The candidate rows were locked (FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
    # transaction holds the whole database) from their SELECT to the UPDATE, so what
    # they say is what was claimed, and the attempt is the one the UPDATE counted.
    rows = sorted((chosen[pk] for pk in changed), key=lambda row: row.pk)
    specs = _batch_specs({row.batch_id for row in rows})
    attempts = []
    for row in rows:
        spec = specs[row.batch_id]
        attempts.append(
            Attempt(
                job_id=str(row.pk),
                batch_id=str(row.batch_id),
                attempt=row.attempts + 1,
                log_id=str(row.log_id),
                argv=render_argv(spec["command"], row.args),
                cpu=spec["cpu"],
                memory_mib=spec["memory"],
                timeout_seconds=spec["timeout_seconds"],
                filesystems=spec["filesystems"],
            )
        )
    return attempts


class _Candidate(NamedTuple):
    pk: Any
    batch_id: Any
    attempts: int
    log_id: Any
    args: Any
    cpu: int
    memory: int


def _claim_candidates(*, free: Capacity, exclude: list[str], limit: int) -> list[_Candidate]:
    """RUNNABLE jobs whose batch fits in `free`, oldest first, at most `limit`, locked
    with FOR UPDATE SKIP LOCKED where the database has it (PostgreSQL), so concurrent
    workers take different rows without waiting.

    Plain SQL because the worker runs it on every step and building it through the ORM
    cost several times more than running it; it is the ORM query

        Job.objects.filter(status=RUNNABLE, batch__cpu__lte=.., batch__memory__lte=..)
        .exclude(pk__in=exclude).order_by("id").select_for_update(skip_locked=True,
        of=("self",)).values_list(...)[:limit]

    with identifiers from the models and every value a parameter."""
    conn = connections[DEFAULT_DB_ALIAS]  # not the `connection` proxy: cheaper to use
    qn = conn.ops.quote_name
    job, batch = Job._meta, Batch._meta
    job_table, batch_table = qn(job.db_table), qn(batch.db_table)
    pk_field = job.pk

    def column(table: str, meta: Any, name: str) -> str:
        return f"{table}.{qn(meta.get_field(name).column)}"

    job_id = column(job_table, job, "id")
    selected = ", ".join(
        [job_id, column(job_table, job, "batch"), column(job_table, job, "attempts"), column(job_table, job, "log_id")]
        + [column(job_table, job, "args"), column(batch_table, batch, "cpu"), column(batch_table, batch, "memory")]
    )
    params: list[Any] = [Status.RUNNABLE, free.cpus, free.memory_mib]
    not_excluded = ""
    if exclude:
        not_excluded = f" AND NOT ({job_id} IN ({', '.join(['%s'] * len(exclude))}))"
        params += [pk_field.get_db_prep_value(pk, conn) for pk in exclude]
    lock = ""
    if conn.features.has_select_for_update:
        lock = f" FOR UPDATE OF {job_table} SKIP LOCKED"
    sql = (
        f"SELECT {selected} FROM {job_table}"  # noqa: S608 (identifiers from the models; values are parameters)
        f" INNER JOIN {batch_table} ON ({column(job_table, job, 'batch')} = {column(batch_table, batch, 'id')})"
        f" WHERE {column(job_table, job, 'status')} = %s AND {column(batch_table, batch, 'cpu')} <= %s"
        f" AND {column(batch_table, batch, 'memory')} <= %s{not_excluded}"
        f" ORDER BY {job_id} ASC LIMIT %s{lock}"
    )
    params.append(limit)
    args_field = job.get_field("args")
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return [
            _Candidate(
                pk=pk_field.to_python(pk),
                batch_id=batch.pk.to_python(batch_id),
                attempts=attempts,
                log_id=job.get_field("log_id").to_python(log_id),
                args=args_field.from_db_value(args, None, conn),
                cpu=cpu,
                memory=memory,
            )
            for pk, batch_id, attempts, log_id, args, cpu, memory in cursor.fetchall()
        ]


# A batch's tool, hardware and filesystems never change once submitted: workers keep
# what they read (bounded, oldest dropped first).
_SPEC_CACHE: dict[Any, dict[str, Any]] = {}
_SPEC_CACHE_SIZE = 256


def _batch_specs(batch_ids: set[Any]) -> dict[Any, dict[str, Any]]:
    specs = {pk: _SPEC_CACHE[pk] for pk in batch_ids if pk in _SPEC_CACHE}
    missing = batch_ids - set(specs)
    if not missing:
        return specs
    for batch in Batch.objects.filter(pk__in=missing).select_related("tool").prefetch_related("filesystems"):
        specs[batch.pk] = {
            "command": batch.tool.command,
            "cpu": batch.cpu,
            "memory": batch.memory,
            "timeout_seconds": batch.timeout_seconds,
            "filesystems": {fs.name: fs.path for fs in batch.filesystems.all()},
        }
        _SPEC_CACHE[batch.pk] = specs[batch.pk]
    while len(_SPEC_CACHE) > _SPEC_CACHE_SIZE:
        del _SPEC_CACHE[next(iter(_SPEC_CACHE))]
    return specs


def record_started(*, worker: Worker, attempts: Iterable[Attempt]) -> int:
    """STARTING -> RUNNING for attempts the executor has started."""
    return _grouped(
        worker=worker, items=[(a.job_id, a.attempt) for a in attempts], to_status=Status.RUNNING, reason="", sources=[Status.STARTING]
    )


def record_outcomes(*, worker: Worker, outcomes: Iterable[Outcome]) -> int:
    """Record how attempts ended: SUCCEEDED; or, for a failure, back to RUNNABLE when
    the job has attempts left (its reason says which attempt failed and why), else
    FAILED with the reason. Reports about attempts that are no longer this worker's
    live attempt (cancelled, declared lost) change nothing. Returns jobs changed."""
    outcomes = list(outcomes)
    changed = _grouped(
        worker=worker, items=[(o.job_id, o.attempt) for o in outcomes if o.succeeded], to_status=Status.SUCCEEDED, reason="", exit_code=0
    )
    failed = [o for o in outcomes if not o.succeeded]
    if not failed:
        return changed
    limits = dict(Job.objects.filter(pk__in=[o.job_id for o in failed]).order_by().values_list("pk", "batch__max_attempts"))
    groups: dict[tuple[str, str, int | None], list[tuple[str, int]]] = defaultdict(list)
    for outcome in failed:
        max_attempts = limits.get(_uuid(outcome.job_id))
        if max_attempts is None:
            continue  # deleted meanwhile
        if outcome.attempt < max_attempts:
            key = (Status.RUNNABLE, f"Attempt {outcome.attempt} failed ({outcome.reason}); waiting to retry", outcome.exit_code)
        else:
            key = (Status.FAILED, outcome.reason, outcome.exit_code)
        groups[key].append((outcome.job_id, outcome.attempt))
    for (to_status, reason, exit_code), items in groups.items():
        changed += _grouped(worker=worker, items=items, to_status=to_status, reason=reason, exit_code=exit_code)
    return changed


def requeue_attempts(*, worker: Worker, attempts: dict[str, int], reason: str) -> int:
    """Give back attempts this worker stopped without their fault (it is shutting
    down): RUNNABLE again, and the attempt does not count against max_attempts."""
    return _grouped(worker=worker, items=list(attempts.items()), to_status=Status.RUNNABLE, reason=reason, attempts=F("attempts") - 1)


def _grouped(
    *, worker: Worker, items: list[tuple[str, int]], to_status: str, reason: str, sources: Iterable[str] = LIVE, **fields: Any
) -> int:
    by_attempt: dict[int, list[str]] = defaultdict(list)
    for job_id, attempt in items:
        by_attempt[attempt].append(job_id)
    changed = 0
    for attempt, ids in by_attempt.items():
        guard = Q(worker=worker, attempts=attempt)
        changed += len(transition(job_ids=ids, from_statuses=sources, to_status=to_status, reason=reason, guard=guard, **fields))
    return changed


def live_attempts(*, worker: Worker, job_ids: Iterable[str]) -> set[str]:
    """Which of `job_ids` are still live attempts of this worker (the others were
    cancelled, deleted or declared lost, and must be stopped)."""
    ids = list(job_ids)
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            str(pk) for pk in Job.objects.filter(pk__in=chunk, worker=worker, status__in=LIVE).order_by().values_list("pk", flat=True)
        )
    return found


def _uuid(value: str) -> Any:
    return uuid.UUID(value)
