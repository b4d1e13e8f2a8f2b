"""Fair share: whose job starts next.

Each user has a weight (`accounts.UserShare`, default 1) and may belong to a group
(`accounts.ShareGroup`) with a weight of its own: groups share the machine by their
weights, the users of a group share the group's part by theirs; a user without a group
is a group of their own, weighing their weight.

A user's *load* is what they hold now plus what they held lately, both in cpus: the cpus
of their live attempts, plus their decayed usage (the cpu-seconds of their attempts,
each halved every `BATCHES_FAIRSHARE_HALF_LIFE` seconds since it was used; running ones
count as they run) divided by the decay's mean life (half-life / ln 2), which makes it
the average number of cpus they held lately. A group's load is its users' summed. The
next job to start is one of the group with the lowest load per weight, and in it of
the user with the lowest load per weight: a newcomer with no usage starts at once, a
heavy user yields while others wait, and with everyone busy the cpus held converge to
the weights. Nothing is reserved: a share nobody uses is used by the others
(work-conserving). Inside one user's work, batches with a higher `priority` go first,
then older ones, each within its `max_running`.
"""

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count

from accounts.models import UserShare
from jobs import sql
from jobs.models import Attempt, Job, Usage
from jobs.statuses import QUEUED


def half_life() -> float:
    return float(settings.BATCHES_FAIRSHARE_HALF_LIFE)


def mean_life() -> float:
    """The decay's mean life: usage over it is the average cpus held lately."""
    return half_life() / math.log(2)


def decayed(value: float, *, seconds: float) -> float:
    """`value` cpu-seconds, `seconds` later."""
    return value * 2.0 ** (-max(seconds, 0.0) / half_life())


def accrued(*, cpus: int, seconds: float) -> float:
    """The decayed cpu-seconds, now, of `cpus` held for the last `seconds`."""
    return cpus * mean_life() * (1.0 - 2.0 ** (-max(seconds, 0.0) / half_life()))


def charge_usage(*, amounts: dict[Any, float], now: datetime) -> None:
    """Add cpu-seconds, decayed to `now`, to each user's usage: the row is decayed to
    `now` and the amount added, under a row lock (users in id order: no deadlock); a
    user's first charge makes the row, a deleted user's is dropped. On PostgreSQL one
    statement for them all (an upsert that decays in SQL: each worker's write of its
    ended attempts pays it); elsewhere the rows are locked, made where missing and
    updated."""
    amounts = {user_id: amount for user_id, amount in amounts.items() if amount > 0}
    if not amounts:
        return
    conn = sql.default_connection()
    if conn.vendor == "postgresql":
        _upsert_usage(conn, amounts=amounts, now=now)
        return
    with transaction.atomic():
        rows = _locked_usage(sorted(amounts))
        missing = sorted(set(amounts) - {row.user_id for row in rows})
        if missing:
            # Only users who still exist: the foreign key is checked at commit, where a
            # deleted user's row would fail the whole write of the worker's reports.
            missing = sorted(get_user_model().objects.filter(pk__in=missing).values_list("pk", flat=True))
            Usage.objects.bulk_create([Usage(user_id=u, cpu_seconds=0.0, as_of=now) for u in missing], ignore_conflicts=True)
            rows = sorted([*rows, *_locked_usage(missing)], key=lambda row: row.user_id)
        for row in rows:
            row.cpu_seconds = decayed(row.cpu_seconds, seconds=(now - row.as_of).total_seconds()) + amounts[row.user_id]
            row.as_of = max(row.as_of, now)
        if len(rows) == 1:
            rows[0].save(update_fields=["cpu_seconds", "as_of"])
        elif rows:
            Usage.objects.bulk_update(rows, ["cpu_seconds", "as_of"])


def _upsert_usage(conn: Any, *, amounts: dict[Any, float], now: datetime) -> None:
    """`charge_usage` on PostgreSQL: INSERT ... ON CONFLICT DO UPDATE, rows in user id
    order, the old value decayed as `decayed` does and `as_of` never moved back."""
    usage, user_model = sql.table(Usage, conn), sql.table(get_user_model(), conn)
    user, cpu_seconds, as_of = (sql.column(Usage, name, conn) for name in ("user", "cpu_seconds", "as_of"))
    user_pk = sql.column(get_user_model(), get_user_model()._meta.pk.name, conn)
    user_type = Usage._meta.get_field("user").target_field.rel_db_type(conn)
    ids = sorted(amounts)
    query = (
        f"INSERT INTO {usage} ({user}, {cpu_seconds}, {as_of})"  # noqa: S608 (names from the models' _meta)
        f" SELECT t.u, t.a, %s FROM unnest(%s::{user_type}[], %s::float8[]) AS t(u, a)"
        f" WHERE EXISTS (SELECT 1 FROM {user_model} WHERE {user_model}.{user_pk} = t.u) ORDER BY t.u"
        f" ON CONFLICT ({user}) DO UPDATE SET"
        f" {cpu_seconds} = {usage}.{cpu_seconds}"
        f" * power(2.0, -greatest(EXTRACT(EPOCH FROM (EXCLUDED.{as_of} - {usage}.{as_of}))::float8, 0.0) / %s)"
        f" + EXCLUDED.{cpu_seconds},"
        f" {as_of} = greatest({usage}.{as_of}, EXCLUDED.{as_of})"
    )
    with conn.cursor() as cursor:
        cursor.execute(query, [now, ids, [amounts[u] for u in ids], half_life()])


def _locked_usage(user_ids: list[Any]) -> list[Usage]:
    return list(Usage.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id"))


def charge_ended_attempts(*, attempts: Iterable[tuple[Any, int, datetime | None]], now: datetime) -> None:
    """Charge the attempts that end now, each (owner id, cpus, start time or None: it
    never ran) to their owners' usage."""
    amounts: dict[Any, float] = {}
    for owner_id, cpus, start in attempts:
        if start is not None:
            amounts[owner_id] = amounts.get(owner_id, 0.0) + accrued(cpus=cpus, seconds=(now - start).total_seconds())
    charge_usage(amounts=amounts, now=now)


@dataclass
class Standing:
    """One user's place in fair share."""

    user_id: Any
    username: str
    weight: int
    group: str | None
    group_weight: int
    usage: float = 0.0  # decayed cpu-seconds, running attempts included
    running_cpus: int = 0  # cpus of live attempts (starting, running, queued in a cluster)
    running_jobs: int = 0
    waiting_jobs: int = 0

    @property
    def group_key(self) -> tuple[str, Any]:
        return ("group", self.group) if self.group else ("user", self.user_id)

    def load(self, mean: float | None = None) -> float:
        """Cpus held now plus those held lately (see the module); `mean`: `mean_life()`,
        when the caller has it already (the planner asks for thousands of loads)."""
        return self.running_cpus + self.usage / (mean or mean_life())


@dataclass
class Snapshot:
    """What the planner reads before it hands out jobs: each user's standing, and how
    many jobs of each batch hold a slot (a live attempt: running, starting, or queued in
    a cluster's own queue), which a batch's `max_running` counts."""

    users: dict[Any, Standing]
    live_per_batch: dict[Any, int]


def snapshot(*, now: datetime, waiting: bool = False, named: bool = False) -> Snapshot:
    """Every user who has a share, usage or live attempts, with their weight, group,
    decayed usage and what they hold now, and the live jobs per batch; with `waiting`,
    also each user's jobs waiting to start (SUBMITTED, PENDING, RUNNABLE: a count over
    the backlog, for reports), with `named` their user names. Three queries (shares,
    usage, live attempts), one more for each of those options: whatever the backlog,
    and the live attempts are at most what the workers hold."""
    users: dict[Any, Standing] = {}
    live_per_batch: dict[Any, int] = {}

    def standing(user_id: Any) -> Standing:
        if user_id not in users:
            users[user_id] = Standing(user_id=user_id, username="", weight=1, group=None, group_weight=1)
        return users[user_id]

    for user_id, weight, group, group_weight in UserShare.objects.values_list("user_id", "weight", "group__name", "group__weight"):
        s = standing(user_id)
        s.weight, s.group, s.group_weight = weight, group, group_weight or 1
    halving = half_life()
    for user_id, cpu_seconds, age in _usage_ages(now):
        standing(user_id).usage += cpu_seconds * 2.0 ** (-max(age, 0.0) / halving)
    live = (
        Attempt.objects.filter(end_time__isnull=True)
        .order_by()
        .values_list("job__batch_id", "job__batch__owner_id", "job__batch__cpu", "start_time")
    )
    for batch_id, owner_id, cpus, start in live:
        live_per_batch[batch_id] = live_per_batch.get(batch_id, 0) + 1
        s = standing(owner_id)
        s.running_cpus += cpus
        s.running_jobs += 1
        if start is not None:
            s.usage += accrued(cpus=cpus, seconds=(now - start).total_seconds())
    if waiting:
        counts = (
            Job.objects.filter(status__in=QUEUED, batch__deleted_at__isnull=True)
            .order_by()
            .values_list("batch__owner_id")
            .annotate(n=Count("pk"))
        )
        for owner_id, n in counts:
            standing(owner_id).waiting_jobs += n
    if named and users:
        for user_id, username in get_user_model().objects.filter(pk__in=list(users)).values_list("pk", "username"):
            users[user_id].username = username
    for s in users.values():
        if s.group is None:
            s.group_weight = s.weight  # a group of their own
    return Snapshot(users=users, live_per_batch=live_per_batch)


def _usage_ages(now: datetime) -> list[tuple[Any, float, float]]:
    """Every usage row as (user id, cpu-seconds, seconds from its `as_of` to `now`). On
    PostgreSQL the database subtracts: a claim reads a row per user, and converting
    each timestamp to a Python datetime cost more than the rest of the claim's reading."""
    conn = sql.default_connection()
    if conn.vendor != "postgresql":
        return [(u, c, (now - as_of).total_seconds()) for u, c, as_of in Usage.objects.values_list("user_id", "cpu_seconds", "as_of")]
    columns = [sql.column(Usage, name, conn) for name in ("user", "cpu_seconds", "as_of")]
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns[0]}, {columns[1]}, EXTRACT(EPOCH FROM (%s - {columns[2]}))::float8 FROM {sql.table(Usage, conn)}",  # noqa: S608
            [now],
        )
        return cursor.fetchall()


def standings(*, now: datetime, waiting: bool = False, named: bool = False) -> dict[Any, Standing]:
    """The users' standings of `snapshot`."""
    return snapshot(now=now, waiting=waiting, named=named).users


def fair_shares(users: dict[Any, Standing], *, active: set[Any]) -> dict[Any, float]:
    """Each active user's fair share of the machine (0..1): their group's weight over
    the active groups', times their weight over their group's active users'."""
    groups: dict[Any, list[Standing]] = {}
    for user_id in active:
        s = users[user_id]
        groups.setdefault(s.group_key, []).append(s)
    total = sum(members[0].group_weight for members in groups.values()) or 1
    shares: dict[Any, float] = {}
    for members in groups.values():
        part = members[0].group_weight / total
        weights = sum(m.weight for m in members) or 1
        for m in members:
            shares[m.user_id] = part * m.weight / weights
    return shares


@dataclass
class BatchQueue:
    """A batch with jobs waiting to start, as the planner sees it."""

    batch_id: Any
    owner_id: Any
    cpu: int
    memory: int
    priority: int
    max_running: int | None
    running: int  # its live jobs
    available: int | None = None  # RUNNABLE jobs left, when known (None: some)

    def open(self) -> bool:
        if self.available is not None and self.available <= 0:
            return False
        return self.max_running is None or self.running < self.max_running


@dataclass
class Ledger:
    """What the planner moves as it hands out jobs: each user's standing and each
    batch's live jobs."""

    users: dict[Any, Standing]
    batches: list[BatchQueue]
    _groups: dict[Any, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mean = mean_life()
        for s in self.users.values():
            self._groups[s.group_key] = self._groups.get(s.group_key, 0.0) + s.load(mean)

    def user(self, user_id: Any) -> Standing:
        if user_id not in self.users:
            self.users[user_id] = Standing(user_id=user_id, username="", weight=1, group=None, group_weight=1)
        return self.users[user_id]

    def group_load(self, key: Any) -> float:
        return self._groups.get(key, 0.0)

    def take(self, queue: BatchQueue) -> None:
        """One job of `queue` starts."""
        s = self.user(queue.owner_id)
        s.running_cpus += queue.cpu
        s.running_jobs += 1
        self._groups[s.group_key] = self.group_load(s.group_key) + queue.cpu
        queue.running += 1
        if queue.available is not None:
            queue.available -= 1

    def untake(self, queue: BatchQueue) -> None:
        """Undo a `take` of `queue` (planned, then not started)."""
        s = self.user(queue.owner_id)
        s.running_cpus -= queue.cpu
        s.running_jobs -= 1
        self._groups[s.group_key] = self.group_load(s.group_key) - queue.cpu
        queue.running -= 1
        if queue.available is not None:
            queue.available += 1


def plan(ledger: Ledger, *, limit: int, cpus: int, memory_mib: int) -> list[BatchQueue]:
    """The next `limit` jobs to start, as the batch each comes from, in order, within
    `cpus` and `memory_mib` (a job that does not fit is passed over for one that does:
    work-conserving). Moves `ledger` as if they started. O(limit x log users)."""
    mean = mean_life()
    by_user: dict[Any, list[BatchQueue]] = {}
    for queue in sorted(ledger.batches, key=lambda q: (-q.priority, str(q.batch_id))):
        by_user.setdefault(queue.owner_id, []).append(queue)
    members: dict[Any, list[tuple[float, str, Any]]] = {}
    for user_id in by_user:
        s = ledger.user(user_id)
        heapq.heappush(members.setdefault(s.group_key, []), (s.load(mean) / s.weight, str(user_id), user_id))
    groups = [(ledger.group_load(key) / ledger.user(heap[0][2]).group_weight, str(key), key) for key, heap in members.items()]
    heapq.heapify(groups)
    picks: list[BatchQueue] = []
    while groups and len(picks) < limit:
        _, _, key = heapq.heappop(groups)
        heap = members[key]
        while heap:
            _, _, user_id = heap[0]
            queue = next((q for q in by_user[user_id] if q.open() and q.cpu <= cpus and q.memory <= memory_mib), None)
            if queue is None:
                heapq.heappop(heap)  # nothing of theirs can start now
                continue
            ledger.take(queue)
            picks.append(queue)
            cpus, memory_mib = cpus - queue.cpu, memory_mib - queue.memory
            s = ledger.user(user_id)
            heapq.heapreplace(heap, (s.load(mean) / s.weight, str(user_id), user_id))
            break
        if heap:
            heapq.heappush(groups, (ledger.group_load(key) / ledger.user(heap[0][2]).group_weight, str(key), key))
    return picks


def share_report(*, user: Any, everyone: bool, now: datetime) -> list[dict[str, Any]]:
    """Fair share as `GET /shares` shows it: the caller's standing, or (`everyone`, for
    operators) every user who has a share, usage, or work running or waiting, by name.
    `fair_share` is the part of the machine the weights give them among the users with
    work (as if they had some, for one who has none); `current_share` the part of the
    running cpus they hold now."""
    users = standings(now=now, waiting=True, named=True)
    if user.pk not in users:
        users[user.pk] = Standing(user_id=user.pk, username=user.get_username(), weight=1, group=None, group_weight=1)
    active = {u for u, s in users.items() if s.running_jobs or s.waiting_jobs}
    running = sum(s.running_cpus for s in users.values())
    shown = sorted(users.values(), key=lambda s: s.username) if everyone else [users[user.pk]]
    report = []
    for s in shown:
        shares = fair_shares(users, active=active | {s.user_id})
        report.append(
            {
                "username": s.username,
                "weight": s.weight,
                "group": s.group,
                "group_weight": s.group_weight if s.group else None,
                "usage_cpu_seconds": round(s.usage, 3),
                "fair_share": round(shares[s.user_id], 4),
                "current_share": round(s.running_cpus / running, 4) if running else 0.0,
                "running_jobs": s.running_jobs,
                "running_cpus": s.running_cpus,
                "waiting_jobs": s.waiting_jobs,
            }
        )
    return report
