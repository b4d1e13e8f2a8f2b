"""Why a job waits, and its place in line.

A RUNNABLE or SUBMITTED job is in line: `queue_position` is its place in the order in
which waiting jobs will start (1 = next) if nothing else changed, the order in which
the planner of `jobs.fairshare` hands out slots one at a time: each start adds its cpus
to its user's (and group's) load, and the next start goes to the lowest load per
weight. Computed when read, from the users' standings and how many jobs each batch has
waiting, so it is exact for the moment it is read (jobs ending later lower their users'
loads and may reorder what follows). A PENDING job is held by what its reason names
(a dependency, a quota, no job account, no worker large enough) and has no place yet.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count
from django.utils import timezone

from batches.models import Batch
from jobs import fairshare
from jobs.dispatch import batches_with_jobs_in
from jobs.models import Attempt, Job
from jobs.statuses import Status

IN_LINE = (Status.SUBMITTED, Status.RUNNABLE)
# Batches with jobs in line that are looked at (oldest first), as claims do.
_BATCHES = 1000


@dataclass
class _Line:
    batch_id: Any
    owner_id: Any
    cpu: int
    priority: int
    waiting: int


@dataclass(frozen=True)
class Waiting:
    position: int | None
    reason: str


def describe(job: Job) -> Waiting:
    """Where `job` stands if it waits: its place in line and why it waits (its stored
    reason for a PENDING job, or one that names what holds it)."""
    if job.status == Status.PENDING:
        return Waiting(None, job.reason)
    if job.status not in IN_LINE:
        return Waiting(None, job.reason)
    now = timezone.now()
    batch = job.batch
    if batch.cancel_requested_at is not None:
        return Waiting(None, job.reason or "Its batch is being cancelled")
    if Attempt.objects.filter(job=job, end_time__isnull=True).exists():
        return Waiting(None, job.reason)  # started, or waiting in a cluster's own queue: its reason says which
    seen = fairshare.snapshot(now=now)
    users = seen.users
    lines = _lines()
    mine = next((line for line in lines if line.batch_id == job.batch_id), None)
    if mine is None:  # more batches in line than are looked at: counted as the newest
        mine = _Line(batch.pk, batch.owner_id, batch.cpu, batch.priority, 0)
        lines.append(mine)
    position = _position(job=job, mine=mine, lines=lines, users=users)
    running = seen.live_per_batch.get(batch.pk, 0)
    return Waiting(position, _reason(batch=batch, status=job.status, position=position, users=users, now_running=running))


def _lines() -> list[_Line]:
    """Every batch with jobs in line (at most `_BATCHES`), with how many."""
    ids = set(batches_with_jobs_in(Status.RUNNABLE, limit=_BATCHES)) | set(batches_with_jobs_in(Status.SUBMITTED, limit=_BATCHES))
    batches = Batch.objects.filter(pk__in=ids, deleted_at__isnull=True, cancel_requested_at__isnull=True)
    info = {pk: (owner, cpu, priority) for pk, owner, cpu, priority in batches.values_list("pk", "owner_id", "cpu", "priority")}
    counts = Job.objects.filter(batch_id__in=list(info), status__in=IN_LINE).order_by().values_list("batch_id").annotate(n=Count("pk"))
    return [_Line(pk, *info[pk], waiting=n) for pk, n in counts]


def _order(lines: Iterable[_Line]) -> list[_Line]:
    return sorted(lines, key=lambda line: (-line.priority, str(line.batch_id)))


def _picks_before(lines: list[_Line], *, load: float, weight: int, key: float, first: bool) -> tuple[int, float]:
    """How many of one user's (or group's) jobs in line, taken in `lines`' order from
    `load`, start before a start at `key` (load per weight); with `first` (they sort
    before the job's user), those at `key` too. Returns (jobs, cpus)."""
    picks, cpus = 0, 0.0
    for line in lines:
        room = key * weight - load
        n = (math.floor(room / line.cpu) + 1 if first else math.ceil(room / line.cpu)) if room >= 0 else 0
        n = max(0, min(n, line.waiting))
        picks, cpus, load = picks + n, cpus + n * line.cpu, load + n * line.cpu
        if n < line.waiting:
            break
    return picks, cpus


def _position(*, job: Job, mine: _Line, lines: list[_Line], users: dict[Any, fairshare.Standing]) -> int:
    by_user: dict[Any, list[_Line]] = {}
    for line in _order(lines):
        by_user.setdefault(line.owner_id, []).append(line)
    me = users.get(job.batch.owner_id) or fairshare.Standing(user_id=job.batch.owner_id, username="", weight=1, group=None, group_weight=1)
    # The owner's own jobs ahead: batches before this one in their order, and this
    # batch's jobs in line before it in the batch (claims take them by `index`).
    ahead, ahead_cpus = 0, 0.0
    for line in by_user.get(me.user_id, []):
        if line.batch_id == mine.batch_id:
            break
        ahead, ahead_cpus = ahead + line.waiting, ahead_cpus + line.waiting * line.cpu
    before_in_batch = Job.objects.filter(batch_id=job.batch_id, status__in=IN_LINE, index__lt=job.index).count()
    ahead, ahead_cpus = ahead + before_in_batch, ahead_cpus + before_in_batch * mine.cpu
    my_key = (me.load() + ahead_cpus) / me.weight

    def standing(user_id: Any) -> fairshare.Standing:
        return users.get(user_id) or fairshare.Standing(user_id=user_id, username="", weight=1, group=None, group_weight=1)

    # Inside the owner's group: the other members' starts before theirs.
    group_picks, group_cpus = ahead, ahead_cpus
    others: dict[Any, list[Any]] = {}
    for user_id in by_user:
        if user_id == me.user_id:
            continue
        s = standing(user_id)
        if s.group_key == me.group_key:
            n, cpus = _picks_before(by_user[user_id], load=s.load(), weight=s.weight, key=my_key, first=str(user_id) < str(me.user_id))
            group_picks, group_cpus = group_picks + n, group_cpus + cpus
        else:
            others.setdefault(s.group_key, []).append(user_id)
    group_load = sum(s.load() for s in users.values() if s.group_key == me.group_key)
    group_key = (group_load + group_cpus) / me.group_weight
    position = group_picks + 1
    # Other groups: their starts while their load per weight is below the group's key.
    for key, members in others.items():
        leader = standing(members[0])
        load = sum(s.load() for s in users.values() if s.group_key == key)
        merged = _order(line for user_id in members for line in by_user[user_id])
        n, _ = _picks_before(merged, load=load, weight=leader.group_weight, key=group_key, first=str(key) < str(me.group_key))
        position += n
    return position


def batch_reasons(batch: Batch) -> dict[str, str]:
    """Why `batch`'s jobs in line wait, by status (SUBMITTED, RUNNABLE), as a job list
    shows them: what JobDetail says without each job's place in line (its
    `queue_position` gives that). Empty for a batch being cancelled. A constant number of
    queries, whatever the backlog."""
    if batch.cancel_requested_at is not None:
        return {}
    seen = fairshare.snapshot(now=timezone.now())
    running = seen.live_per_batch.get(batch.pk, 0)
    return {status: _reason(batch=batch, status=status, position=None, users=seen.users, now_running=running) for status in IN_LINE}


def list_reasons(*, batch: Batch, in_line: dict[Any, str]) -> dict[Any, str]:
    """The reason each of `batch`'s jobs in line (job id -> status) shows in a job list
    (`batch_reasons`); a job whose previous attempt is still being stopped is left out:
    its stored reason says so. Read once per page."""
    reasons = batch_reasons(batch)
    held = set(Attempt.objects.filter(job_id__in=list(in_line), end_time__isnull=True).values_list("job_id", flat=True))
    return {pk: reasons[status] for pk, status in in_line.items() if pk not in held and status in reasons}


def _reason(*, batch: Batch, status: str, position: int | None, users: dict[Any, fairshare.Standing], now_running: int) -> str:
    ahead = f"; {position - 1} job(s) in line before it" if position is not None else ""
    if batch.max_running is not None and now_running >= batch.max_running:
        return f"Its batch runs at most {batch.max_running} job(s) at once ({now_running} running){ahead}"
    me = users.get(batch.owner_id)
    active = {u for u, s in users.items() if s.running_jobs} | {batch.owner_id}
    shares = fairshare.fair_shares(users, active=active) if me is not None else {}
    running = sum(s.running_cpus for s in users.values())
    held = me.running_cpus if me is not None else 0
    share = shares.get(batch.owner_id, 1.0)
    current = held / running if running else 0.0
    usage = me.usage if me is not None else 0.0
    fair = (
        f"fair share: you hold {held} of {running} running cpu(s) ({current:.0%}) against a fair share of {share:.0%}, "
        f"usage {usage:,.0f} cpu-s"
    )
    if status == Status.SUBMITTED:
        return f"Submitted, being placed{ahead} ({fair})"
    return f"Waiting for {batch.cpu} free cpu and {batch.memory} MiB on a worker{ahead} ({fair})"
