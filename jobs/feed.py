"""The event feed (`GET /events`): a user's job state changes and finished batches, in
order, after a given event id; and their pruning after the retention.

Reading costs the same whatever the table holds: one range of the (owner, id) index,
`limit` rows long.

**No event is ever skipped.** Event ids come from a sequence when the row is inserted,
not when its transaction commits: on PostgreSQL a reader can see event 101 committed
while 100 is still being written by a transaction that commits a moment later; a
consumer that moved its cursor to 101 would never see 100. So a read serves only ids up
to a *settled* point (`settled_through`):

  1. L = the sequence's last value;
  2. the transactions of this database in progress now (pg_stat_activity);
  3. once those have ended, every event id up to L is committed or never will be: a
     writer of events always writes another row first in the same transaction (the
     job's UPDATE, a lock), so it held a transaction id before it drew an event id,
     and was in (2).

Step 3 usually needs no wait (no transaction in flight, or it ends within
milliseconds); a read waits for it at most `SETTLE_SECONDS`, and then serves up to the
last point this process saw settle. SQLite has one writer at a time, holding its lock
until it commits: ids commit in order, there is nothing to wait for.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, router, transaction
from django.utils import timezone

from jobs import sql
from jobs.models import FeedState, JobEvent

FEED_FIELDS = ("id", "job_id", "batch_id", "from_status", "to_status", "reason", "attempt", "time", "counts")
# How long a read waits for the transactions in flight to end before serving up to the
# last settled point instead.
SETTLE_SECONDS = 1.0
# Events removed per statement by `prune_events`.
PRUNE_CHUNK = 5000

_settled_lock = threading.Lock()
_last_settled: dict[str, int] = {}


class CursorGone(Exception):
    """The cursor is from before the retention: events after it were pruned."""

    def __init__(self, after: int, pruned_through: int) -> None:
        super().__init__(
            f"events after {after} up to {pruned_through} were removed (kept {settings.BATCHES_EVENTS_RETENTION_DAYS} days, "
            "BATCHES_EVENTS_RETENTION_DAYS): some of yours may be among them. Start again without `after` "
            "(and read the state of your batches afresh), or from the newest event."
        )


@dataclass(frozen=True)
class FeedPage:
    """A page of the feed: `rows` (FEED_FIELDS), and `through`, the settled point it was
    read up to: every event of the user with an id up to it is in this page or before
    `after` (when the page is not cut by its limit), so a client may resume from it."""

    rows: list[dict[str, Any]]
    through: int


def feed_page(*, user: AbstractBaseUser, after: int, limit: int) -> FeedPage:
    """Up to `limit` of `user`'s events with an id above `after`, oldest first, as rows
    of FEED_FIELDS; only settled ones (see the module), so that a consumer resuming
    after the last id it saw misses nothing. Raises CursorGone for a cursor from before
    the retention (after > 0 and below the highest pruned id).

    Queries: the last id and the pruned point (one), the transactions in flight
    (PostgreSQL), the page."""
    conn = connections[router.db_for_read(JobEvent)]
    last_id, pruned_through = _positions(conn)
    if 0 < after < pruned_through:
        raise CursorGone(after, pruned_through)
    settled = _settle(conn, last_id) if conn.vendor == "postgresql" else last_id
    if settled <= after:
        # Never past the settled point, even for a cursor beyond it: `after` set past
        # every id (`batches watch` asks 2**63 - 1) learns where the feed stands now.
        return FeedPage(rows=[], through=settled)
    events = JobEvent.objects.filter(owner_id=user.pk, id__gt=after, id__lte=settled)
    return FeedPage(rows=list(events.order_by("id").values(*FEED_FIELDS)[:limit]), through=settled)


def _positions(conn: Any) -> tuple[int, int]:
    """(the last event id drawn: the sequence's last value on PostgreSQL, the highest
    committed id where ids commit in order; the highest pruned id) in one statement.
    pg_stat_clear_snapshot() makes the next read of pg_stat_activity fresh even inside
    a transaction."""
    state = f"(SELECT {sql.column(FeedState, 'pruned_through', conn)} FROM {sql.table(FeedState, conn)} WHERE {sql.column(FeedState, 'id', conn)} = 1)"  # noqa: S608
    with conn.cursor() as cursor:
        if conn.vendor != "postgresql":
            top = f"(SELECT MAX({sql.column(JobEvent, 'id', conn)}) FROM {sql.table(JobEvent, conn)})"  # noqa: S608
            cursor.execute(f"SELECT {top}, {state}")  # noqa: S608 (names from the models)
            last_id, pruned = cursor.fetchone()
            return last_id or 0, pruned or 0
        cursor.execute(
            f"SELECT pg_stat_clear_snapshot(), pg_sequence_last_value(pg_get_serial_sequence(%s, %s)::regclass), {state}",  # noqa: S608
            [JobEvent._meta.db_table, JobEvent._meta.pk.column],
        )
        _, last_id, pruned = cursor.fetchone()
    return last_id or 0, pruned or 0


def _settle(conn: Any, last_id: int) -> int:
    """`last_id` once every transaction of this database now in flight (other than the
    caller's own) has ended; if they take longer than SETTLE_SECONDS, the last point this
    process saw settle (never above `last_id`)."""
    in_flight = (
        "SELECT pid, backend_xid::text FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
    )
    with conn.cursor() as cursor:
        cursor.execute(in_flight)
        running = cursor.fetchall()
        deadline = time.monotonic() + SETTLE_SECONDS
        pause = 0.002
        while running and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT a.pid, a.backend_xid::text FROM pg_stat_activity a JOIN unnest(%s::int[], %s::text[]) AS w(pid, xid)"
                " ON a.pid = w.pid AND a.backend_xid::text = w.xid",
                [[pid for pid, _ in running], [xid for _, xid in running]],
            )
            running = cursor.fetchall()
    key = f"{conn.alias}:{conn.settings_dict.get('NAME')}"
    with _settled_lock:
        if running:
            return min(_last_settled.get(key, 0), last_id)
        _last_settled[key] = max(_last_settled.get(key, 0), last_id)
    return last_id


def settled_id() -> int | None:
    """The id up to which every event is committed or never will be (see the module);
    None where ids commit in order (SQLite). For `jobs.batch_finished`."""
    conn = connections[router.db_for_write(JobEvent)]
    if conn.vendor != "postgresql":
        return None
    last_id, _ = _positions(conn)
    return _settle(conn, last_id)


def prune_events(*, older_than: timedelta | None = None, now: datetime | None = None, chunk: int = PRUNE_CHUNK) -> int:
    """Remove the events older than `older_than` (default BATCHES_EVENTS_RETENTION_DAYS)
    from the oldest id up, stopping at the first younger one (ids follow time), `chunk`
    per transaction, and record the highest id removed (`FeedState.pruned_through`, the
    410 point). Returns events removed. Each chunk costs the same whatever the table
    holds: it reads the lowest ids from the primary key."""
    older_than = older_than or timedelta(days=settings.BATCHES_EVENTS_RETENTION_DAYS)
    cutoff = (now or timezone.now()) - older_than
    removed = 0
    while True:
        with transaction.atomic():
            state = feed_state_for_update()
            head = list(JobEvent.objects.order_by("id").values_list("id", "time")[:chunk])
            through = None
            for event_id, when in head:
                if when >= cutoff:
                    break
                through = event_id
            if through is None:
                return removed
            removed += JobEvent.objects.filter(id__lte=through).delete()[0]
            FeedState.objects.filter(pk=state.pk).update(pruned_through=max(state.pruned_through, through))
        if len(head) < chunk or through != head[-1][0]:
            return removed


def feed_state_for_update() -> FeedState:
    """The one FeedState row (pk 1), locked: created at first use."""
    state, _ = FeedState.objects.select_for_update().get_or_create(pk=1)
    return state


def event_type(event: dict[str, Any]) -> str:
    """`job.<new status in lower case>`, or `batch.finished` for a row without a job."""
    return "batch.finished" if event["job_id"] is None else f"job.{event['to_status'].lower()}"


def as_feed_event(row: dict[str, Any]) -> dict[str, Any]:
    """A row of `feed_page` in the feed's shape: `type` added; a batch.finished has no
    job, statuses or attempt (null), and its `counts`; a job event's `counts` is null."""
    finished = row["job_id"] is None
    return {
        "id": row["id"],
        "type": event_type(row),
        "batch_id": row["batch_id"],
        "job_id": row["job_id"],
        "from_status": None if finished else row["from_status"],
        "to_status": None if finished else row["to_status"],
        "reason": row["reason"],
        "attempt": None if finished else row["attempt"],
        "time": row["time"],
        "counts": row["counts"] if finished else None,
    }


def wait_for_events(*, user: AbstractBaseUser, after: int, limit: int, wait: float) -> FeedPage:
    """`feed_page`, and if it is empty, again every BATCHES_EVENTS_POLL_MS until it is
    not or `wait` seconds have passed (a long poll). Between two looks the request
    holds no database connection (it is closed; the next look opens one), only its
    server thread or process; inside a transaction (tests) it keeps its connection."""
    deadline = time.monotonic() + wait
    page = feed_page(user=user, after=after, limit=limit)
    conn = connections[router.db_for_read(JobEvent)]
    while not page.rows and time.monotonic() < deadline:
        if not conn.in_atomic_block:
            conn.close()
        time.sleep(max(0.0, min(settings.BATCHES_EVENTS_POLL_MS / 1000, deadline - time.monotonic())))
        page = feed_page(user=user, after=after, limit=limit)
    return page
