"""The database side of running attempts: claiming RUNNABLE jobs, recording what the
executor reports (starts and ends), noticing cancels and orphans, recovering the jobs of
lost workers and adopting the attempts that outlive their worker. Plain functions,
backend-agnostic; every status change goes through `jobs.transitions.transition`, guarded by
the worker and attempt number it concerns, and every attempt row through `jobs.attempts`.

Claim: in one transaction, select RUNNABLE jobs that fit (oldest first, `FOR UPDATE
SKIP LOCKED` on PostgreSQL, so concurrent workers take different rows without waiting;
never a job that still has a live attempt), then a conditional RUNNABLE -> STARTING
update that sets the worker and increments `attempts`, then one attempt row per job.
Only the ids that update changed are started, so even without row locks (SQLite, where
the IMMEDIATE transaction serialises writers) no job is started twice; and the database
refuses a second live attempt row for a job.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import JobAccount
from batches.models import Batch
from batches.parameters import render_argv
from jobs import attempts as attempt_rows
from jobs.executors.base import AttemptSpec, Capacity, LiveAttempt, Outcome, Queued, Report, Started, internal_error
from jobs.models import Attempt, Job, Worker
from jobs.policy import refusal
from jobs.statuses import CANCELLED_REASON, HELD, LIVE, Status
from jobs.transitions import set_reason, transition

logger = logging.getLogger("jobs.scheduling")

WORKER_LOST = "worker lost"
LOST_CONTACT = "worker lost contact with the database"


# -- claiming ---------------------------------------------------------------------------
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
    conn = connections[DEFAULT_DB_ALIAS]  # not the `connection` proxy: cheaper to use
    qn = conn.ops.quote_name
    job, batch, attempt, account = Job._meta, Batch._meta, Attempt._meta, JobAccount._meta
    job_table, batch_table, attempt_table = qn(job.db_table), qn(batch.db_table), qn(attempt.db_table)
    account_table = qn(account.db_table)
    pk_field = job.pk

    def column(table: str, meta: Any, name: str) -> str:
        return f"{table}.{qn(meta.get_field(name).column)}"

    job_id = column(job_table, job, "id")
    selected = ", ".join(
        [job_id, column(job_table, job, "batch"), column(job_table, job, "attempts"), column(job_table, job, "log_id")]
        + [column(job_table, job, "args"), column(batch_table, batch, "cpu"), column(batch_table, batch, "memory")]
        + [column(account_table, account, "username"), column(account_table, account, "uid")]
    )
    params: list[Any] = [Status.RUNNABLE, fits.cpus, fits.memory_mib]
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


# -- recording what the executor reports ------------------------------------------------
def record_reports(*, worker: Worker, reports: Iterable[Report], from_queue: bool = False) -> int:
    """Record what happened to `worker`'s attempts, in the caller's transaction: starts
    (STARTING -> RUNNING, the attempt row RUNNING with its external id) and ends. An
    attempt that started and ended since the last call is written once, passing through
    RUNNING (both events, both times). Reports about attempts that are no longer this
    worker's live attempt (deleted, declared lost) change nothing. Returns jobs whose
    status changed.

    `from_queue`: the executor queues work itself (a cluster). Its attempts may wait in
    the cluster's queue with their job RUNNABLE (`Queued` reports); a start or an end of
    such an attempt first brings its job back to STARTING, the way it came."""
    reports = list(reports)
    outcomes = [r for r in reports if isinstance(r, Outcome)]
    ended = {(o.job_id, o.attempt) for o in outcomes}
    started = {(r.job_id, r.attempt): r for r in reports if isinstance(r, Started)}
    only_started = [r for key, r in started.items() if key not in ended]
    queued = {(r.job_id, r.attempt): r for r in reports if isinstance(r, Queued)}  # the latest of each
    now = timezone.now()
    changed = 0
    if queued:
        changed += _record_queued(
            worker=worker, reports=[r for key, r in queued.items() if key not in ended and key not in started], now=now
        )
    if from_queue and (started or ended):
        changed += _grouped(
            worker=worker,
            items=[*started, *ended],
            to_status=Status.STARTING,
            reason="Started by the cluster",
            sources=[Status.RUNNABLE],
            now=now,
        )
    if only_started:
        items = [(r.job_id, r.attempt) for r in only_started]
        changed += _grouped(worker=worker, items=items, to_status=Status.RUNNING, reason="", sources=[Status.STARTING], now=now)
        attempt_rows.mark_started(reports=only_started, now=now)
    if outcomes:
        changed += record_outcomes(worker=worker, outcomes=outcomes, now=now, started={k: v for k, v in started.items() if k in ended})
    return changed


def queue_reason(report: Queued) -> str:
    """What a job waiting in a cluster's queue says in `reason`."""
    if report.placed:
        return f"Starting on {report.node}" if report.node else "Starting"
    return f"Queued as {report.external_id}: {report.reason}" if report.external_id else report.reason


def _record_queued(*, worker: Worker, reports: list[Queued], now: Any) -> int:
    """Queued attempts: RUNNABLE with the scheduler's reason (or STARTING once placed),
    and their external ids on the attempt rows."""
    changed = 0
    by_target: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for report in reports:
        by_target[(Status.STARTING if report.placed else Status.RUNNABLE, queue_reason(report))].append((report.job_id, report.attempt))
    for (to_status, reason), items in by_target.items():
        source = Status.RUNNABLE if to_status == Status.STARTING else Status.STARTING
        changed += _grouped(worker=worker, items=items, to_status=to_status, reason=reason, sources=[source], now=now)
        if to_status == Status.RUNNABLE:
            # Already waiting: only the reason changes (no new state, no event).
            by_attempt: dict[int, list[str]] = defaultdict(list)
            for job_id, attempt in items:
                by_attempt[attempt].append(job_id)
            for attempt, ids in by_attempt.items():
                set_reason(job_ids=ids, status=Status.RUNNABLE, reason=reason, guard=Q(worker=worker, attempts=attempt))
    attempt_rows.mark_queued(reports=[r for r in reports if r.external_id])
    return changed


def record_outcomes(
    *, worker: Worker, outcomes: list[Outcome], now: Any = None, started: dict[tuple[str, int], Started] | None = None
) -> int:
    """Record how attempts of `worker` ended, and decide what comes next for each job:
    - it succeeded: SUCCEEDED;
    - a cancel was asked for: FAILED `Cancelled by user` (the attempt has now stopped);
    - the attempt is not charged (the worker stopped, or lost the database): RUNNABLE
      again, without using up an attempt;
    - it failed with attempts left (charged failures < max_attempts): RUNNABLE, its
      reason saying which attempt failed and why;
    - else FAILED with the attempt's reason.
    `started` holds the starts of these attempts not recorded yet (the job passes
    through RUNNING). Closes the attempt rows. Returns jobs whose status changed."""
    now = now or timezone.now()
    started = started or {}
    jobs = {
        str(pk): (max_attempts, charged, cancel_at)
        for pk, max_attempts, charged, cancel_at in Job.objects.filter(pk__in=[o.job_id for o in outcomes])
        .order_by()
        .values_list("pk", "batch__max_attempts", "charged_attempts", "cancel_requested_at")
    }
    groups: dict[tuple[str, str, int | None, bool, bool], list[tuple[str, int]]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.job_id not in jobs:
            continue  # deleted meanwhile
        max_attempts, charged, cancel_at = jobs[outcome.job_id]
        if outcome.succeeded:
            key = (Status.SUCCEEDED, "", 0, False)
        elif cancel_at is not None:
            key = (Status.FAILED, CANCELLED_REASON, outcome.exit_code, False)
        elif not outcome.charged:
            key = (Status.RUNNABLE, f"Attempt {outcome.attempt} stopped ({outcome.reason}); requeued", None, False)
        elif charged + 1 < max_attempts:
            key = (Status.RUNNABLE, f"Attempt {outcome.attempt} failed ({outcome.reason}); waiting to retry", outcome.exit_code, True)
        else:
            key = (Status.FAILED, outcome.reason, outcome.exit_code, True)
        groups[(*key, (outcome.job_id, outcome.attempt) in started)].append((outcome.job_id, outcome.attempt))
    changed = 0
    for (to_status, reason, exit_code, charge, unseen_start), items in groups.items():
        fields: dict[str, Any] = {"exit_code": exit_code}
        if charge:
            fields["charged_attempts"] = F("charged_attempts") + 1
        if unseen_start:
            fields.update(sources=[Status.STARTING], through=Status.RUNNING)
        changed += _grouped(worker=worker, items=items, to_status=to_status, reason=reason, now=now, **fields)
    attempt_rows.close_attempts(outcomes=outcomes, now=now, worker=worker, started=started)
    return changed


def _grouped(
    *, worker: Worker, items: list[tuple[str, int]], to_status: str, reason: str, now: Any, sources: Iterable[str] = LIVE, **fields: Any
) -> int:
    by_attempt: dict[int, list[str]] = defaultdict(list)
    for job_id, attempt in items:
        by_attempt[attempt].append(job_id)
    changed = 0
    for attempt, ids in by_attempt.items():
        guard = Q(worker=worker, attempts=attempt)
        changed += len(transition(job_ids=ids, from_statuses=sources, to_status=to_status, reason=reason, now=now, guard=guard, **fields))
    return changed


# -- cancels and orphans ----------------------------------------------------------------
class AttemptCheck(NamedTuple):
    orphaned: set[str]  # no longer this worker's live attempt: stop, nothing to record
    cancelled: set[str]  # a cancel was asked for: stop, then record FAILED


def check_attempts(*, worker: Worker, attempts: dict[str, int]) -> AttemptCheck:
    """Of `attempts` (job id -> attempt number, this worker's), which are orphaned (the
    job or its batch was deleted, it was declared lost, or moved on) and which have a
    cancel request."""
    ids = list(attempts)
    live: dict[str, tuple[int, bool]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = (
            Job.objects.filter(pk__in=chunk, worker=worker, status__in=HELD).order_by().values_list("pk", "attempts", "cancel_requested_at")
        )
        live.update((str(pk), (number, cancel_at is not None)) for pk, number, cancel_at in rows)
    orphaned = {job_id for job_id, number in attempts.items() if live.get(job_id, (None,))[0] != number}
    cancelled = {job_id for job_id in attempts if job_id not in orphaned and live[job_id][1]}
    return AttemptCheck(orphaned=orphaned, cancelled=cancelled)


# -- lost workers and adoption ----------------------------------------------------------
def recover_lost_workers(*, now: Any = None) -> int:
    """Declare LOST every ACTIVE worker whose lease has run out. The live attempts of a
    lost worker whose attempts die with it (local processes, killed by its fence) end
    as `worker lost`: their jobs are retried if they have attempts left, else FAILED
    (or FAILED `Cancelled by user` if a cancel was asked for). The attempts of a worker
    that `keeps_attempts` stay live, for the next worker of its executor to adopt. Safe
    to run from many workers at once (each lost worker is claimed by one conditional
    update). Returns how many jobs were recovered."""
    now = now or timezone.now()
    recovered = 0
    for lost in Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__lt=now):
        with transaction.atomic():
            claimed = Worker.objects.filter(pk=lost.pk, state=Worker.State.ACTIVE, lease_expires__lt=now).update(
                state=Worker.State.LOST, stopped_at=now
            )
            if claimed and not lost.keeps_attempts:
                live = Job.objects.filter(worker=lost, status__in=LIVE).order_by().values_list("pk", "attempts")
                outcomes = [Outcome(str(pk), number, succeeded=False, reason=WORKER_LOST) for pk, number in live]
                recovered += record_outcomes(worker=lost, outcomes=outcomes, now=now) if outcomes else 0
    return recovered


def adopt_attempts(*, worker: Worker) -> list[LiveAttempt]:
    """Take over the live attempts that stopped or lost workers of `worker`'s executor
    left behind (for executors whose attempts outlive their worker): they become this
    worker's, and are returned for the executor to follow."""
    orphans = list(
        Attempt.objects.filter(end_time__isnull=True, executor=worker.executor)
        .filter(Q(worker__isnull=True) | ~Q(worker__state=Worker.State.ACTIVE))
        .select_related("job__batch")
        .order_by("job_id")[:10_000]
    )
    moved = attempt_rows.reassign(attempts=orphans, to=worker)
    return [
        LiveAttempt(
            job_id=str(a.job_id),
            attempt=a.number,
            log_id=str(a.job.log_id),
            external_id=a.external_id,
            timeout_seconds=a.job.batch.timeout_seconds,
            memory_mib=a.job.batch.memory,
            cpu=a.job.batch.cpu,
            running=a.state == Attempt.State.RUNNING,
        )
        for a in moved
    ]
