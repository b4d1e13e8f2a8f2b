"""Benchmark: the event feed (issue 22). Two parts, on PostgreSQL.

    .venv/bin/python bench/events.py [--jobs 10000] [--events 1000000] [--repeat 30]
    .venv/bin/python bench/events.py --jobs 100000 --events 10000000   # the normal case (the issue's sizes)

**Pages.** The feed's page time, a user's page of `limit=1000` after a cursor, with
10,000 events in JobEvent, then with `--events` (filled in SQL, `INSERT ... SELECT
generate_series`: five busy users' events, about a fifth each, interleaved one by one,
and a sparse user's, one in 1,000; then VACUUM ANALYZE),
against the bare keyset query on the same table (`SELECT ... WHERE owner_id = %s AND
id > %s ORDER BY id LIMIT 1000`; its plan is printed). Per round, one random user and
cursor with 1,000 or more of the user's events after it, then in this order: the bare
query, the feed's service (`jobs.feed.feed_page`, its settled point included, and the
rows shaped), the whole route through Django's test client (`GET /events?after=...
&limit=1000`: token, throttle, view, serializer, JSON; no network). `--repeat` rounds
with the cursor among the user's newest 2,000 events (a follower near the head), then
`--repeat` with it anywhere in the user's history (a consumer catching up, on pages the
cache may not hold), at each size; at the large size also `--repeat` for the sparse
user (cursor anywhere). The sizes run one after the other (the same table), small first.

**Lag.** `--jobs` no-op jobs (`/bin/true`, one batch) through a real `runworker`
(unsealed: BATCHES_ISOLATION=off; its default slots, the machine's cpus) while a reader
follows the feed with long polls through the real HTTP stack (gunicorn with the
shipped config, over loopback, keep-alive: `GET /events?after=<last>&limit=1000&wait=25`,
asked again at once after each answer) until the batch's `batch.finished`. The lag of
an event is its arrival at the reader (the answer read, this machine's clock) minus its
commit: a deferred constraint trigger, installed by this bench, stamps each event row
with clock_timestamp() at COMMIT into an unlogged side table (one more insert per event,
in the worker's own transactions). The lag from the row's `time` (set before the
transaction's statements, so a little longer) is printed too. The baseline, run at the
same time: a reader straight on the table with the bare keyset query (its own
connection, the same cadence: again at once after a page with rows, 500 ms after an
empty one, like the feed's BATCHES_EVENTS_POLL_MS), which does not wait for
transactions in flight, so it can pass over an event committed out of id order: the
events it never saw are counted. Also checked: the feed reader saw every event of the
user exactly once, in id order. Target (issue 22): p99 lag at most 2 s.

On the bench database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench;
emptied first, and between the parts).
"""

import argparse
import http.client
import json
import os
import random
import socket
import tempfile
import threading
import time

import harness

USERS = 5  # busy users, about a fifth of the events each
SLOTS = 1000  # ... and a sparse user, one event in SLOTS
SEED_JOBS = 20
POLL = 0.5
COMMITS = "bench_event_commit"
SEED = "bench_event_seed"
TABLE = "jobs_jobevent"  # JobEvent's (checked in main())
BARE = (
    f"SELECT id, job_id, batch_id, from_status, to_status, reason, attempt, time, counts FROM {TABLE} "  # noqa: S608
    "WHERE owner_id = %s AND id > %s ORDER BY id LIMIT 1000"
)


def sql(query: str, params: list | None = None) -> list:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else []


def catalog() -> tuple:
    from batches.models import Filesystem, Tool

    tool, _ = Tool.objects.update_or_create(name="bench-noop", defaults={"command": ["/bin/true"], "parameters": {}})
    scratch, _ = Filesystem.objects.get_or_create(name="bench-scratch", defaults={"path": tempfile.gettempdir(), "public": True})
    return tool, scratch


def fill_events(*, total: int, busy: list, sparse: object) -> float:
    """JobEvent grown to `total` rows in SQL, 1,000,000 per statement, in SLOTS slots
    that repeat: the last slot is the `sparse` user's (one event in SLOTS), the others
    the `busy` users', one by one; each event names one of SEED_JOBS real jobs of its
    user's batch. Foreign keys unchecked while filling (session_replication_role; every
    id is real). Returns the seconds it took."""
    from batches.models import Batch
    from jobs.models import Job
    from jobs.services import create_jobs

    started = time.perf_counter()
    if not sql(f"SELECT to_regclass('{SEED}')")[0][0]:
        sql(f"CREATE TABLE {SEED} (k int PRIMARY KEY, job_id uuid, batch_id uuid, owner_id int)")
        tool, _ = catalog()
        jobs = {}
        for user in [*busy, sparse]:
            batch = Batch.objects.create(
                owner=user, tool=tool, command=tool.command, cpu=1, memory=64, n_jobs=SEED_JOBS, timeout_seconds=60
            )
            create_jobs(batch=batch, arguments=[{}] * SEED_JOBS)
            jobs[user.pk] = (batch.pk, list(Job.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True)))
        for k in range(SLOTS):
            user = sparse if k == SLOTS - 1 else busy[k % len(busy)]
            batch_id, job_ids = jobs[user.pk]
            sql(f"INSERT INTO {SEED} VALUES (%s, %s, %s, %s)", [k, job_ids[(k // len(busy)) % SEED_JOBS], batch_id, user.pk])  # noqa: S608
    have = sql(f"SELECT count(*) FROM {TABLE}")[0][0]  # noqa: S608
    sql("SET session_replication_role = replica")
    try:
        for low in range(have, total, 1_000_000):
            high = min(total, low + 1_000_000) - 1
            sql(
                f"INSERT INTO {TABLE} (job_id, batch_id, owner_id, from_status, to_status, reason, attempt, time, counts) "  # noqa: S608
                f"SELECT s.job_id, s.batch_id, s.owner_id, 'RUNNING', 'SUCCEEDED', '', 1, now() - interval '1 hour', NULL "
                f"FROM generate_series(%s, %s) AS g JOIN {SEED} s ON s.k = g %% {SLOTS}",
                [low, high],
            )
    finally:
        sql("SET session_replication_role = DEFAULT")
    harness.vacuum_analyze(TABLE)
    return time.perf_counter() - started


def page_rounds(*, repeat: int, users: list, clients: dict, recent: bool) -> tuple[list, list, list]:
    """`repeat` rounds of (bare keyset query, feed_page, GET /events), each round one
    random user and cursor: among the user's newest 2,000 events when `recent` (a
    follower near the head), anywhere in the user's history otherwise (a consumer
    catching up: pages the cache may not hold). Returns the three lists of seconds."""
    from django.contrib.auth.models import User

    from jobs.feed import as_feed_event, feed_page

    bare: list[float] = []
    service: list[float] = []
    route: list[float] = []
    for _ in range(repeat):
        user = random.choice(users)  # noqa: S311 (a benchmark's choice)
        mine = sql(f"SELECT count(*) FROM {TABLE} WHERE owner_id = %s", [user.pk])[0][0]  # noqa: S608
        low = max(0, mine - 2000) if recent else 0
        offset = random.randrange(low, mine - 1000)  # noqa: S311
        after = sql(f"SELECT id FROM {TABLE} WHERE owner_id = %s ORDER BY id OFFSET %s LIMIT 1", [user.pk, offset])[0][0]  # noqa: S608
        seconds, rows = harness.timed(lambda: sql(BARE, [user.pk, after]))  # noqa: B023
        assert len(rows) == 1000
        bare.append(seconds)
        fresh = User.objects.get(pk=user.pk)
        seconds, page = harness.timed(lambda: [as_feed_event(row) for row in feed_page(user=fresh, after=after, limit=1001).rows])  # noqa: B023
        assert len(page) == 1001 and page[0]["id"] == rows[0][0]  # limit + 1, as the route asks
        service.append(seconds)
        seconds, response = harness.timed(lambda: clients[user.pk].get(f"/events?after={after}&limit=1000"))  # noqa: B023
        assert response.status_code == 200 and len(response.json()) == 1000, response.status_code
        route.append(seconds)
    return bare, service, route


def plan(user_id: int) -> str:
    """The bare query's plan from the middle of the user's events, its nodes in a line
    (the feed's page reads the same range)."""
    mine = sql(f"SELECT count(*) FROM {TABLE} WHERE owner_id = %s", [user_id])[0][0]  # noqa: S608
    after = sql(f"SELECT id FROM {TABLE} WHERE owner_id = %s ORDER BY id OFFSET %s LIMIT 1", [user_id, mine // 2])[0][0]  # noqa: S608
    found = sql(f"EXPLAIN (FORMAT JSON) {BARE}", [user_id, after])[0][0]  # noqa: S608
    node = found[0]["Plan"]
    names = []
    while node:
        names.append(node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else ""))
        node = (node.get("Plans") or [None])[0]
    return " > ".join(names)


def pages_part(options: argparse.Namespace) -> None:
    from django.contrib.auth.models import User
    from django.test.utils import setup_test_environment
    from rest_framework.test import APIClient

    from accounts.services import issue_token

    setup_test_environment()  # the test client's host name
    harness.fresh_database()
    sql(f"DROP TABLE IF EXISTS {SEED}")
    busy = [User.objects.create_user(f"feed{number}") for number in range(USERS)]
    sparse = User.objects.create_user("feed-sparse")
    clients = {}
    for user in [*busy, sparse]:
        clients[user.pk] = APIClient()
        clients[user.pk].credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user=user)[1]}")
    for size in (10_000, options.events):
        filled = fill_events(total=size, busy=busy, sparse=sparse)
        sparse_events = sql(f"SELECT count(*) FROM {TABLE} WHERE owner_id = %s", [sparse.pk])[0][0]  # noqa: S608
        harness.print_config(
            f"events (pages): a user's feed page of 1,000 against the bare keyset query, {size:,} events",
            data=f"{size:,} events in JobEvent (filled in {filled:.0f} s, VACUUM ANALYZE): {USERS} busy users, about a fifth "
            f"each, interleaved one by one, and a sparse one, one event in {SLOTS} ({sparse_events:,})",
            isolation="n/a (no job runs)",
            slots="n/a (no worker)",
            batch_size="a page of limit=1000 after a random cursor with 1,000+ of the user's events after it",
            rounds=f"{options.repeat} per line below, interleaved: bare, feed_page, GET /events (Django test client, no network), ...",
        )
        print(f"   {'plan, busy':<14} {plan(busy[0].pk)}", flush=True)
        placements = [("busy", busy, True), ("busy", busy, False)]
        if sparse_events >= 2000:  # a full page after a cursor: at the large size only
            print(f"   {'plan, sparse':<14} {plan(sparse.pk)}", flush=True)
            placements.append(("sparse", [sparse], False))
        for label, users, recent in placements:
            bare, service, route = page_rounds(repeat=options.repeat, users=users, clients=clients, recent=recent)
            where = "near the head (among its newest 2,000)" if recent else "anywhere in its history"
            print(f"results ({size:,} events, a {label} user, the cursor {where}; baseline = the bare keyset query):")
            harness.compare(f"feed_page, {label}, {size:,}", bare, service, p99=True, baseline_label="bare")
            harness.compare(f"GET /events, {label}, {size:,}", bare, route, p99=True, baseline_label="bare")
    sql(f"DROP TABLE IF EXISTS {SEED}")


def install_commit_stamps() -> None:
    """The deferred trigger that stamps each event row's commit (see the module)."""
    from jobs.models import JobEvent

    table = JobEvent._meta.db_table
    sql(f"DROP TRIGGER IF EXISTS bench_stamp ON {table}")
    sql(f"DROP TABLE IF EXISTS {COMMITS}")
    sql(f"CREATE UNLOGGED TABLE {COMMITS} (event_id bigint, committed timestamptz)")
    sql(
        "CREATE OR REPLACE FUNCTION bench_stamp() RETURNS trigger LANGUAGE plpgsql AS "  # noqa: S608 (names are the bench's)
        f"$$ BEGIN INSERT INTO {COMMITS} VALUES (NEW.id, clock_timestamp()); RETURN NULL; END $$"
    )
    sql(
        f"CREATE CONSTRAINT TRIGGER bench_stamp AFTER INSERT ON {table} "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench_stamp()"
    )


def remove_commit_stamps() -> None:
    from jobs.models import JobEvent

    sql(f"DROP TRIGGER IF EXISTS bench_stamp ON {JobEvent._meta.db_table}")
    sql("DROP FUNCTION IF EXISTS bench_stamp()")
    sql(f"DROP TABLE IF EXISTS {COMMITS}")


class FeedReader(threading.Thread):
    """Follows GET /events with long polls over one keep-alive connection until the
    batch's `batch.finished`; `arrivals` holds each event id's arrival (time.time())."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.batch_id: str | None = None
        self.arrivals: dict[int, float] = {}
        self.order: list[int] = []
        self.requests = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
            cursor = 0
            while True:
                connection.request("GET", f"/events?after={cursor}&limit=1000&wait=25", headers={"Authorization": f"Bearer {self.token}"})
                response = connection.getresponse()
                body = response.read()
                now = time.time()
                self.requests += 1
                assert response.status == 200, (response.status, body[:300])
                for event in json.loads(body):
                    self.arrivals.setdefault(event["id"], now)
                    self.order.append(event["id"])
                    cursor = event["id"]
                    if event["type"] == "batch.finished" and event["batch_id"] == self.batch_id:
                        return
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            self.error = exc


class BareReader(threading.Thread):
    """The baseline: the bare keyset query on its own connection, at the feed's cadence."""

    def __init__(self, owner_id: int, dsn: dict) -> None:
        super().__init__(daemon=True)
        self.owner_id, self.dsn = owner_id, dsn
        self.arrivals: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        from jobs.models import JobEvent

        query = f"SELECT id FROM {JobEvent._meta.db_table} WHERE owner_id = %s AND id > %s ORDER BY id LIMIT 1000"  # noqa: S608
        cursor = 0
        with psycopg.connect(autocommit=True, **self.dsn) as connection:
            while not self.stop.is_set():
                rows = connection.execute(query, [self.owner_id, cursor]).fetchall()
                now = time.time()
                for (event_id,) in rows:
                    self.arrivals.setdefault(event_id, now)
                cursor = rows[-1][0] if rows else cursor
                if not rows:
                    time.sleep(POLL)


def lag_part(options: argparse.Namespace) -> None:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection

    from accounts.services import issue_token
    from jobs.submission import submit_batch

    harness.fresh_database()
    install_commit_stamps()
    tool, scratch = catalog()
    user = User.objects.create_user("feed-reader")
    token = issue_token(user=user)[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_WORKERS": "2"}
    harness.print_config(
        f"events (lag): {options.jobs:,} no-op jobs, commit -> arrival at a long-polling feed reader",
        isolation="off (BATCHES_ISOLATION=off: the worker runs /bin/true unsealed)",
        slots=f"one runworker, its default slots ({os.cpu_count()} cpus), jobs of 1 cpu, 64 MiB",
        batch_size=f"one batch of {options.jobs:,} jobs (/bin/true), submitted through jobs.submission after the readers start",
        reader="GET /events?after=<last>&limit=1000&wait=25 over loopback, keep-alive, gunicorn (shipped config, 2 sync workers)",
        baseline=f"the bare keyset query on the table at the same time, again at once after rows, {POLL * 1000:.0f} ms after none",
        feed=f"BATCHES_EVENTS_POLL_MS {settings.BATCHES_EVENTS_POLL_MS}, BATCHES_EVENTS_MAX_WAIT {settings.BATCHES_EVENTS_MAX_WAIT}",
        commit_stamp="deferred constraint trigger: clock_timestamp() at COMMIT, one unlogged insert per event",
    )
    server, worker = harness.start_service(env, port=port, log_path=os.path.join(os.environ["BATCHES_DATA_DIR"], "gunicorn.log"))
    try:
        harness.wait_for_worker(worker)
        feed = FeedReader(port, token)
        params = connection.get_connection_params()
        bare = BareReader(user.pk, {k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")})
        feed.start()
        bare.start()
        time.sleep(1.0)  # both readers waiting
        started = time.monotonic()
        batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=64, filesystem_ids=[scratch.pk], jobs=[{"args": {}}] * options.jobs)
        feed.batch_id = str(batch.pk)  # before its batch.finished can be written (a second after the last job)
        feed.join(timeout=options.timeout)
        elapsed = time.monotonic() - started
        time.sleep(2 * POLL)
        bare.stop.set()
        bare.join()
        if feed.is_alive() or feed.error:
            raise SystemExit(f"the feed reader did not see batch.finished within {options.timeout} s: {feed.error!r}")
    finally:
        worker.terminate()
        server.terminate()
        worker.wait()
        server.wait()
    report_lag(options, feed=feed, bare=bare, user=user, elapsed=elapsed)
    remove_commit_stamps()


def report_lag(options: argparse.Namespace, *, feed: FeedReader, bare: BareReader, user: object, elapsed: float) -> None:
    from jobs.models import Job, JobEvent

    table = JobEvent._meta.db_table
    rows = sql(
        f"SELECT e.id, extract(epoch FROM c.committed), extract(epoch FROM e.time) FROM {table} e "  # noqa: S608
        f"JOIN {COMMITS} c ON c.event_id = e.id WHERE e.owner_id = %s ORDER BY e.id",
        [user.pk],
    )
    ids = [row[0] for row in rows]
    through = max(feed.arrivals)
    expected = [event_id for event_id in ids if event_id <= through]
    in_order = feed.order == sorted(feed.order) and len(feed.order) == len(set(feed.order))
    succeeded = Job.objects.filter(batch__owner=user, status="SUCCEEDED").count()
    print(
        f"results ({len(expected):,} events of {succeeded:,} SUCCEEDED jobs in {elapsed:.0f} s, "
        f"{succeeded / elapsed:.0f} jobs/s, {len(expected) / elapsed:.0f} events/s; {feed.requests:,} feed requests):"
    )
    print(
        f"   feed reader: saw {len(feed.arrivals):,} of {len(expected):,} events up to batch.finished, "
        f"each once, in id order: {'yes' if in_order and len(feed.order) == len(expected) else 'NO'}"
    )
    committed = {row[0]: float(row[1]) for row in rows}
    stamped = {row[0]: float(row[2]) for row in rows}
    feed_lag = [feed.arrivals[i] - committed[i] for i in expected if i in feed.arrivals]
    bare_lag = [bare.arrivals[i] - committed[i] for i in expected if i in bare.arrivals]
    from_time = [feed.arrivals[i] - stamped[i] for i in expected if i in feed.arrivals]
    missed = sum(1 for i in expected if i not in bare.arrivals)
    target = "target p99 <= 2000 ms: " + ("ok" if harness.percentile(feed_lag, 0.99) <= 2.0 else "OVER")
    harness.compare("commit -> arrival", bare_lag, feed_lag, p99=True, baseline_label="bare", target=target)
    p50, p99 = harness.percentile(from_time, 0.5) * 1000, harness.percentile(from_time, 0.99) * 1000
    print(
        f"   {'row time -> arrival (feed reader)':<38} p50 {p50:9.2f} ms   p99 {p99:9.2f} ms   (the row's time is set before its statements run)"
    )
    print(f"   feed lag max {max(feed_lag) * 1000:.0f} ms; the bare reader never saw {missed:,} of the events (passed over in id order)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs followed (100,000: the normal case)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in history for the large pages (10,000,000: the normal case)")
    parser.add_argument("--repeat", type=int, default=30, help="page rounds per size")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the lag part may take")
    parser.add_argument("--part", choices=["pages", "lag", "both"], default="both")
    options = parser.parse_args()

    harness.prepare_environment(BATCHES_ISOLATION="off", BATCHES_REQUIRE_ISOLATION="0", BATCHES_THROTTLE_RATE="1000000/min")
    harness.setup_django()
    from jobs.models import JobEvent

    assert JobEvent._meta.db_table == TABLE, JobEvent._meta.db_table
    if options.part in ("pages", "both"):
        pages_part(options)
    if options.part in ("lag", "both"):
        lag_part(options)


if __name__ == "__main__":
    main()
