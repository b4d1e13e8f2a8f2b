"""Placing queued jobs: SUBMITTED jobs become RUNNABLE (or PENDING with the reason they
wait), and PENDING jobs whose wait is over become RUNNABLE. Run by workers in their
sweep; every status change goes through `jobs.transitions.transition`.

A sweep costs the same with ten or a million jobs queued: it finds the batches that have
jobs in a state by a skip scan over the (status, batch) index (one index probe per
distinct batch, at most `_BATCHES_PER_SWEEP` of them), skips batches that no live worker
can run without reading their jobs, and moves at most `limit` jobs.
"""

from typing import Any, NamedTuple

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Count
from django.utils import timezone

from accounts.job_accounts import NO_ACCOUNT_REASON, accounts_in_use, assign_from_pool
from accounts.models import JobAccount
from batches.models import Batch
from jobs import sql
from jobs.dependencies import Verdict, dependency_verdicts
from jobs.models import Job, Worker
from jobs.selectors import has_live_attempt
from jobs.statuses import LIVE, Status
from jobs.transitions import set_reason, transition

# One sweep places at most this many jobs, from at most this many batches per state:
# short transactions (placing costs about 60 us a job, and the sweeper is a worker that
# claims nothing meanwhile), and the next sweep goes on.
DISPATCH_LIMIT = 1000
_BATCHES_PER_SWEEP = 100
# A batch's SUBMITTED jobs are made RUNNABLE only while it has fewer than this many
# RUNNABLE ones: enough for every worker's next claims until the next sweep tops it up,
# so a 100,000-job batch costs a sweep no more than a small one (the rest waits
# SUBMITTED, "being placed", and in line like RUNNABLE jobs).
_RUNNABLE_AHEAD = 2000
# pg_try_advisory_xact_lock key of the dispatcher ("disp" in ASCII).
_DISPATCH_LOCK_KEY = 0x64697370


class Placement(NamedTuple):
    moved: int  # jobs that changed status
    fresh: bool  # some batch that had no RUNNABLE job has some now: idle workers should look


def dispatch_submitted(*, limit: int = DISPATCH_LIMIT) -> int:
    """`dispatch`, returning how many jobs moved."""
    return dispatch(limit=limit).moved


def dispatch(*, limit: int = DISPATCH_LIMIT) -> Placement:
    """Move SUBMITTED jobs on, and PENDING jobs whose wait is over. Returns how many moved,
    and whether a batch without RUNNABLE jobs got some (or PENDING jobs became RUNNABLE):
    then idle workers are to be woken; a batch topped up is one they already claim from.

    A job becomes RUNNABLE when some live worker is large enough for its batch's cpu and
    memory and its owner is under BATCHES_USER_MAX_ACTIVE_JOBS (jobs RUNNABLE, STARTING
    or RUNNING; 0 means no quota). Otherwise a SUBMITTED job becomes PENDING with a
    reason naming what it waits for: a worker large enough, or a place in its owner's
    quota. Jobs are taken in submission order within a batch, oldest batches first; a
    batch's SUBMITTED jobs only while it has fewer than `_RUNNABLE_AHEAD` RUNNABLE ones
    (up to that many: one bounded count a batch).

    Where tenants have job accounts of their own (`accounts.job_accounts`), a job also
    needs its owner's: one without gets the next free pool account, or waits PENDING
    saying so (a RUNNABLE job whose owner lost theirs goes back to PENDING).

    A batch that depends on others (`batches.models.BatchDependency`, decided by
    `jobs.dependencies`) comes first: while a condition does not hold yet its queued
    jobs wait PENDING, saying which batch they wait for and how far it is; once one can
    no longer hold they end FAILED naming that batch; once all hold they go on as any
    job. Only the batches being placed are asked about, at three queries a sweep.

    One worker dispatches at a time, in one transaction; the others skip their turn
    (returning 0). Two dispatchers updating the same hundreds of rows deadlock on
    PostgreSQL, and each would count the quota without seeing the other's moves.
    """
    with transaction.atomic():
        if not _take_dispatch_lock():
            return Placement(0, fresh=False)
        return _dispatch(limit=limit)


def _take_dispatch_lock() -> bool:
    """On PostgreSQL, a transaction-scoped advisory lock, or False if another worker
    holds it. SQLite needs none: the IMMEDIATE transaction already serialises writers."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_DISPATCH_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def batches_with_jobs_in(status: str, *, limit: int = _BATCHES_PER_SWEEP) -> list[Any]:
    """Ids of the (oldest, by id) batches that have jobs in `status`, at most `limit`.

    A recursive query that jumps from one batch id to the next in the (status, batch)
    index: `limit` index probes, however many jobs each batch has. (A SELECT DISTINCT
    would read every index entry of the state: a second per million queued jobs.)"""
    conn = connections[DEFAULT_DB_ALIAS]
    query = f"{skip_scan(conn)} SELECT batch_id FROM b WHERE batch_id IS NOT NULL"  # noqa: S608
    pk = Batch._meta.pk
    with conn.cursor() as cursor:
        cursor.execute(query, [status, status, limit])
        return [pk.to_python(row[0]) for row in cursor.fetchall()]


def skip_scan(conn: Any) -> str:
    """`WITH RECURSIVE b(batch_id, n) AS (...)`: the ids of the oldest batches that have
    jobs in a state, one index probe each, with the parameters (status, status, limit);
    the statement it begins reads `b` (whose last row's batch_id is NULL)."""
    table = sql.table(Job, conn)
    batch_col, status_col = sql.column(Job, "batch", conn), sql.column(Job, "status", conn)
    return (
        f"WITH RECURSIVE b(batch_id, n) AS ("  # noqa: S608 (identifiers from the model; values are parameters)
        f" SELECT (SELECT {batch_col} FROM {table} WHERE {status_col} = %s ORDER BY {batch_col} LIMIT 1), 1"
        f" UNION ALL"
        f" SELECT (SELECT {batch_col} FROM {table} WHERE {status_col} = %s AND {batch_col} > b.batch_id ORDER BY {batch_col} LIMIT 1),"
        f" n + 1"
        f" FROM b WHERE b.batch_id IS NOT NULL AND n < %s"
        f")"
    )


def _live_capacities(*, now: Any) -> list[tuple[int, int]]:
    return list(Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__gt=now).values_list("cpus", "memory_mib"))


class _Accounts:
    """Which owners may run (they have a job account, or none is needed)."""

    def __init__(self) -> None:
        self.needed = accounts_in_use()
        self.known: dict[Any, bool] = {}
        self.asked: set[Any] = set()  # owners the pool was asked for this sweep

    def load(self, owners: set[Any]) -> None:
        owners -= set(self.known)
        if self.needed and owners:
            having = set(JobAccount.objects.filter(user_id__in=owners).values_list("user_id", flat=True))
            self.known.update({owner: owner in having for owner in owners})

    def has(self, owner: Any) -> bool:
        """The owner has an account, given now from the pool if they had none."""
        if not self.needed:
            return True
        if not self.known.get(owner) and owner not in self.asked:
            self.asked.add(owner)
            self.known[owner] = assign_from_pool(user_id=owner) is not None
        return bool(self.known.get(owner))


def _dispatch(*, limit: int) -> Placement:
    now = timezone.now()
    capacities = _live_capacities(now=now)
    quota = settings.BATCHES_USER_MAX_ACTIVE_JOBS
    room: dict[Any, int] = {}
    accounts = _Accounts()
    moved, fresh = 0, False
    if accounts.needed:
        moved += _hold_without_account(accounts, limit=limit)
    for source in (Status.SUBMITTED, Status.PENDING):
        batch_ids = batches_with_jobs_in(source)
        if not batch_ids:
            continue
        batches = list(
            Batch.objects.filter(pk__in=batch_ids, deleted_at__isnull=True, cancel_requested_at__isnull=True)
            .only("id", "owner_id", "cpu", "memory")
            .order_by("id")
        )
        if quota:
            _fill_quota_room(room, owners={b.owner_id for b in batches} - set(room), quota=quota)
        accounts.load({b.owner_id for b in batches})
        verdicts = dependency_verdicts(batch_ids=[b.pk for b in batches])
        for batch in batches:
            if moved >= limit:
                return Placement(moved, fresh)
            verdict = verdicts.get(batch.pk)
            if verdict is not None and not verdict.ready:
                moved += _hold_or_fail(batch, source=source, verdict=verdict, limit=limit - moved)
                continue
            if not accounts.has(batch.owner_id):
                if source == Status.SUBMITTED:
                    ids = list(_next(batch, source)[: limit - moved])
                    moved += len(transition(job_ids=ids, from_statuses=[source], to_status=Status.PENDING, reason=NO_ACCOUNT_REASON))
                continue
            fits = any(cpu >= batch.cpu and memory >= batch.memory for cpu, memory in capacities)
            if source == Status.PENDING and (not fits or (quota and room[batch.owner_id] <= 0)):
                if verdict is not None:  # its dependencies held it; now something else does
                    _refresh_reason(batch, reason=_waiting_reason(batch, fits=fits, capacities=capacities, quota=quota))
                continue  # still waiting: nothing to read
            room_ahead, have = limit - moved, 0
            if fits and source == Status.SUBMITTED:
                have = Job.objects.filter(batch=batch, status=Status.RUNNABLE).order_by()[:_RUNNABLE_AHEAD].count()
                room_ahead = min(room_ahead, _RUNNABLE_AHEAD - have)
                if room_ahead <= 0:
                    continue  # enough RUNNABLE already: the rest waits its turn
            ids = list(_next(batch, source)[:room_ahead])
            if not fits:
                reason = _waiting_reason(batch, fits=fits, capacities=capacities, quota=quota)
                moved += len(transition(job_ids=ids, from_statuses=[source], to_status=Status.PENDING, reason=reason))
                continue
            runnable, over = (ids, []) if not quota else (ids[: max(room[batch.owner_id], 0)], ids[max(room[batch.owner_id], 0) :])
            if runnable:
                reason = f"Waiting for a worker with {batch.cpu} free cpu and {batch.memory} MiB"
                changed = len(transition(job_ids=runnable, from_statuses=[source], to_status=Status.RUNNABLE, reason=reason))
                moved += changed
                fresh = fresh or (changed > 0 and (source == Status.PENDING or have == 0))
                if quota:
                    room[batch.owner_id] -= changed
            if over and source == Status.SUBMITTED:
                reason = _waiting_reason(batch, fits=fits, capacities=capacities, quota=quota)
                moved += len(transition(job_ids=over, from_statuses=[source], to_status=Status.PENDING, reason=reason))
    return Placement(moved, fresh)


def _next(batch: Batch, status: str) -> Any:
    """The ids of the batch's jobs in `status`, in submission order (slice it): read
    from the (batch, status, index) index, as many entries as taken."""
    return Job.objects.filter(batch=batch, status=status).order_by("index").values_list("pk", flat=True)


def _waiting_reason(batch: Batch, *, fits: bool, capacities: list[tuple[int, int]], quota: int) -> str:
    """Why a batch's jobs wait PENDING: no live worker is large enough, or the owner's
    quota is full."""
    if not fits:
        largest = max(capacities, default=None)
        have = f"the largest live worker has {largest[0]} cpu and {largest[1]} MiB" if largest else "no worker is running"
        return f"No worker can run it: needs {batch.cpu} cpu and {batch.memory} MiB; {have}"
    return f"Over your quota: at most {quota} of your jobs may be queued or running at once; waiting for one to finish"


# A sweep rewrites the reason of at most this many of a batch's PENDING jobs (the first
# ones); the others say it when their turn comes.
_REASONS_PER_BATCH = 1000


def _hold_or_fail(batch: Batch, *, source: str, verdict: Verdict, limit: int) -> int:
    """A dependent batch whose dependencies do not all hold: its `source` jobs (at most
    `limit`) end FAILED when one can never hold, else wait PENDING saying for what.
    Returns how many changed status."""
    if verdict.failed:
        ids = list(_next(batch, source)[:limit])
        return len(transition(job_ids=ids, from_statuses=[source], to_status=Status.FAILED, reason=verdict.reason))
    if source == Status.SUBMITTED:
        ids = list(_next(batch, source)[:limit])
        return len(transition(job_ids=ids, from_statuses=[source], to_status=Status.PENDING, reason=verdict.reason))
    _refresh_reason(batch, reason=verdict.reason)
    return 0


def _refresh_reason(batch: Batch, *, reason: str) -> None:
    """Give the batch's PENDING jobs `reason` (say, "3 of 10 jobs ended" is now 4):
    one row read when the first of them already has it, so a batch waiting unchanged
    costs one index probe a sweep."""
    pending = Job.objects.filter(batch=batch, status=Status.PENDING).order_by("index")
    if pending.values_list("reason", flat=True).first() in (None, reason):
        return
    set_reason(job_ids=pending.values_list("pk", flat=True)[:_REASONS_PER_BATCH], status=Status.PENDING, reason=reason)


def _hold_without_account(accounts: _Accounts, *, limit: int) -> int:
    """RUNNABLE jobs (of the oldest batches) whose owner has no account and the pool
    none to give: back to PENDING, saying why (claims pass them by)."""
    batches = list(
        Batch.objects.filter(pk__in=batches_with_jobs_in(Status.RUNNABLE), deleted_at__isnull=True).only("id", "owner_id").order_by("id")
    )
    accounts.load({b.owner_id for b in batches})
    moved = 0
    for batch in batches:
        if moved >= limit or accounts.has(batch.owner_id):
            continue
        ids = list(
            Job.objects.filter(batch=batch, status=Status.RUNNABLE)
            .exclude(has_live_attempt())
            .values_list("pk", flat=True)[: limit - moved]
        )
        moved += len(transition(job_ids=ids, from_statuses=[Status.RUNNABLE], to_status=Status.PENDING, reason=NO_ACCOUNT_REASON))
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
