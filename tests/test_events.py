"""GET /events, the event feed: its exact shape, order, pages and scope, batch.finished,
retention (410), long polls, and its query count whatever the history holds."""

import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from jobs.batch_finished import record_finished_batches
from jobs.feed import prune_events
from jobs.models import FeedState, Job, JobEvent
from jobs.statuses import Status
from jobs.transitions import transition
from tests.test_api_contract import finish, submit

FIELDS = {"id", "type", "batch_id", "job_id", "from_status", "to_status", "reason", "attempt", "time", "counts"}
PG = connection.vendor == "postgresql"


def feed(client, query: str = "", status: int = 200):
    response = client.get(f"/events{query}")
    assert response.status_code == status, response.content
    return response


def test_every_change_in_order_with_the_exact_fields(alice_client, catalog):
    batch = submit(alice_client, catalog)
    first, second = Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True)
    finish(first)
    finish(second, Status.FAILED, reason="exit code 3")
    assert record_finished_batches() == 1
    events = feed(alice_client).json()
    assert all(set(event) == FIELDS for event in events)
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
    walk = ["job.runnable", "job.starting", "job.running"]
    assert [(e["job_id"], e["type"]) for e in events[:-1]] == [
        *((str(first), t) for t in [*walk, "job.succeeded"]),
        *((str(second), t) for t in [*walk, "job.failed"]),
    ]
    failed = events[-2]
    assert failed["batch_id"] == batch["batch_id"]
    assert (failed["from_status"], failed["to_status"], failed["reason"], failed["attempt"]) == ("RUNNING", "FAILED", "exit code 3", 0)
    assert failed["counts"] is None
    assert failed["time"].endswith("Z")
    done = events[-1]
    assert done["type"] == "batch.finished"
    assert (done["batch_id"], done["job_id"], done["from_status"], done["to_status"], done["attempt"]) == (
        batch["batch_id"],
        None,
        None,
        None,
        None,
    )
    assert done["counts"] == {"submitted": 0, "pending": 0, "runnable": 0, "starting": 0, "running": 0, "succeeded": 1, "failed": 1}
    # Resuming after any id gives exactly the rest.
    assert feed(alice_client, f"?after={ids[3]}").json() == events[4:]
    assert feed(alice_client, f"?after={ids[-1]}").json() == []


def test_batch_finished_once_per_ending_and_again_after_a_retry(alice_client, catalog):
    batch = submit(alice_client, catalog)
    first, second = Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True)
    finish(first)
    assert record_finished_batches() == 0  # one job still to run
    finish(second, Status.FAILED)
    assert record_finished_batches() == 1
    assert record_finished_batches() == 0  # announced once
    assert alice_client.post(f"/batches/{batch['batch_id']}/retry").json() == {"changed": 1}
    assert record_finished_batches() == 0
    assert transition(job_ids=[second], from_statuses=[Status.RUNNABLE], to_status=Status.STARTING)
    assert transition(job_ids=[second], from_statuses=[Status.STARTING], to_status=Status.SUCCEEDED)
    assert record_finished_batches() == 1
    finished = [e for e in feed(alice_client).json() if e["type"] == "batch.finished"]
    assert [e["counts"]["succeeded"] for e in finished] == [1, 2]


def test_a_cancelled_batch_finishes_too(alice_client, catalog):
    batch = submit(alice_client, catalog)
    assert alice_client.post(f"/batches/{batch['batch_id']}/cancel").status_code == 200
    record_finished_batches()
    events = feed(alice_client).json()
    assert [e["type"] for e in events] == ["job.failed", "job.failed", "batch.finished"]
    assert events[0]["reason"] == "Cancelled by user"
    assert events[-1]["counts"]["failed"] == 2


def test_bob_never_sees_alices_events(alice_client, bob_client, root_client, catalog):
    alices = submit(alice_client, catalog)
    for job_id in Job.objects.filter(batch_id=alices["batch_id"]).values_list("pk", flat=True):
        finish(job_id)
    record_finished_batches()
    bobs = submit(bob_client, catalog)
    bob_job = Job.objects.filter(batch_id=bobs["batch_id"]).values_list("pk", flat=True).first()
    transition(job_ids=[bob_job], from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    seen = feed(bob_client).json()
    assert [e["batch_id"] for e in seen] == [bobs["batch_id"]]
    assert {e["batch_id"] for e in feed(alice_client).json()} == {alices["batch_id"]}
    # Another user's cursor reveals nothing either; an operator reads their own feed.
    assert feed(bob_client, "?after=0&limit=1000").json() == seen
    assert feed(root_client).json() == []


def test_pages_follow_the_link_header(alice_client, catalog):
    batch = submit(alice_client, catalog, jobs=[{"args": {"message": str(i)}} for i in range(25)])
    ids = list(Job.objects.filter(batch_id=batch["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    transition(job_ids=ids, from_statuses=[Status.RUNNABLE], to_status=Status.FAILED, reason="stop")
    seen, url = [], "/events?limit=10"
    while url:
        response = alice_client.get(url)
        assert response.status_code == 200
        seen += response.json()
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
        if url:
            assert parse_qs(urlsplit(url).query)["limit"] == ["10"]
    assert len(seen) == 50 and [e["id"] for e in seen] == sorted(e["id"] for e in seen)


@pytest.mark.parametrize(
    "query", ["?after=-1", "?after=x", "?after=1.5", "?limit=0", "?limit=1001", "?wait=61", "?wait=abc", "?after=%C2%B2"]
)
def test_bad_parameters_are_400(alice_client, db, query):
    body = feed(alice_client, query, status=400).json()
    assert body["status"] == 400 and body["errors"]


def test_needs_a_token(anon_client, db):
    assert anon_client.get("/events").status_code == 401


def test_a_cursor_older_than_the_retention_is_410(alice_client, catalog):
    batch = submit(alice_client, catalog)
    ids = list(Job.objects.filter(batch_id=batch["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE, now=timezone.now() - timedelta(days=40))
    transition(job_ids=ids, from_statuses=[Status.RUNNABLE], to_status=Status.STARTING)
    old = feed(alice_client).json()
    assert len(old) == 4
    assert prune_events() == 2  # the two 40 days old; the retention is 30 days
    assert FeedState.objects.get().pruned_through == old[1]["id"]
    gone = feed(alice_client, f"?after={old[0]['id']}", status=410).json()
    assert gone["status"] == 410 and "BATCHES_EVENTS_RETENTION_DAYS" in gone["detail"]
    # From the pruned point on, or from the start, the feed goes on.
    assert feed(alice_client, f"?after={old[1]['id']}").json() == old[2:]
    assert feed(alice_client).json() == old[2:]
    assert prune_events() == 0


def test_cleanup_prunes_the_feed(alice_client, catalog):
    from io import StringIO

    from django.core.management import call_command

    batch = submit(alice_client, catalog)
    ids = list(Job.objects.filter(batch_id=batch["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE, now=timezone.now() - timedelta(days=31))
    out = StringIO()
    call_command("cleanup", stdout=out)
    assert "pruned 2 event(s) older than 30 day(s)" in out.getvalue()


@override_settings(BATCHES_EVENTS_POLL_MS=20)
def test_wait_answers_empty_after_the_wait(alice_client, db):
    started = time.monotonic()
    assert feed(alice_client, "?wait=1").json() == []
    assert 0.9 <= time.monotonic() - started < 5


def test_the_feed_is_constant_in_queries(alice_client, catalog):
    batch = submit(alice_client, catalog, jobs=[{"args": {"message": str(i)}} for i in range(101)])
    ids = list(Job.objects.filter(batch_id=batch["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    alice_client.get("/events")  # the token's last use is written at most once a minute
    counts = {}
    for size in (1, 10, 100):
        with CaptureQueriesContext(connection) as captured:
            assert len(feed(alice_client, f"?limit={size}").json()) == size
        counts[size] = len(captured.captured_queries)
    # 1 the token with its user; 2 the event sequence's last value and the pruned point;
    # on PostgreSQL 3 the transactions in flight (none: no wait); then the page.
    assert counts == dict.fromkeys((1, 10, 100), 4 if PG else 3), counts


def test_existing_writers_fill_batch_and_owner(alice, catalog):
    """Both paths of transition() (plain SQL and the ORM) write the feed's columns."""
    from django.db.models import Q

    from tests.worker_helpers import make_batch

    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "a"}}, {"args": {"message": "b"}}])
    ids = list(Job.objects.filter(batch=batch).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    # A guard the fast path does not translate: the ORM path.
    transition(job_ids=ids, from_statuses=[Status.RUNNABLE], to_status=Status.FAILED, guard=Q(index__gte=0))
    rows = set(JobEvent.objects.filter(job__batch=batch).values_list("batch_id", "owner_id"))
    assert rows == {(batch.pk, alice.pk)}
    assert JobEvent.objects.filter(job__batch=batch).count() == 4


def test_x_events_through_lets_a_quiet_consumer_move_past_others_events(alice_client, bob_client, catalog):
    bobs = submit(bob_client, catalog)
    ids = list(Job.objects.filter(batch_id=bobs["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    quiet = feed(alice_client)
    top = JobEvent.objects.order_by("-id").values_list("id", flat=True).first()
    assert quiet.json() == [] and quiet.headers["X-Events-Through"] == str(top)
    alices = submit(alice_client, catalog)
    mine = list(Job.objects.filter(batch_id=alices["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=mine, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    page = feed(alice_client, f"?after={top}&limit=1")
    assert len(page.json()) == 1 and page.headers["X-Events-Through"] == str(page.json()[0]["id"])  # cut by the limit
    rest = feed(alice_client, f"?after={page.json()[0]['id']}")
    assert len(rest.json()) == 1 and rest.headers["X-Events-Through"] == str(rest.json()[0]["id"])


def test_a_cursor_past_the_head_learns_where_the_feed_stands(alice_client, bob_client, catalog):
    """`after` past every id answers [] with the head (never past it): where a client
    starts to follow only what comes next (`batches watch`)."""
    bobs = submit(bob_client, catalog)
    ids = list(Job.objects.filter(batch_id=bobs["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    top = JobEvent.objects.order_by("-id").values_list("id", flat=True).first()
    head = feed(alice_client, f"?after={2**63 - 1}&limit=1")
    assert head.json() == [] and head.headers["X-Events-Through"] == str(top)
    alices = submit(alice_client, catalog)
    mine = list(Job.objects.filter(batch_id=alices["batch_id"]).values_list("pk", flat=True))
    transition(job_ids=mine, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    after = feed(alice_client, f"?after={top}")
    # Each of alice's jobs once (their order within one transition is the database's).
    assert sorted(event["job_id"] for event in after.json()) == sorted(str(job_id) for job_id in mine)
