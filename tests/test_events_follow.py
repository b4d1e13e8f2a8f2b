"""Following the feed while jobs change concurrently (committed transactions, several
writers at once): the issue's test. A consumer following the feed through 10,000
no-op jobs sees every transition exactly once and in order, and resumes after being
killed without a gap; a long poll answers as soon as an event commits."""

import random
import threading
import time

import pytest
from django.db import connection
from django.test.utils import override_settings

from jobs.batch_finished import record_finished_batches
from jobs.models import FeedState, Job, JobEvent
from jobs.statuses import Status
from jobs.submission import submit_batch
from jobs.transitions import transition
from tests.conftest import make_client

pytestmark = pytest.mark.django_db(transaction=True)

# A no-op job's life as the worker writes it: placed, claimed, started, ended.
STEPS = [
    (Status.SUBMITTED, Status.RUNNABLE),
    (Status.RUNNABLE, Status.STARTING),
    (Status.STARTING, Status.RUNNING),
    (Status.RUNNING, Status.SUCCEEDED),
]


def _run_jobs(job_ids: list, *, seed: int, errors: list) -> None:
    """One writer: its jobs through every step, a random few at a time (as workers claim
    and record them), in its own transactions and connection."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible test, not a secret)
    try:
        for start in range(0, len(job_ids), 50):
            chunk = job_ids[start : start + 50]
            for source, target in STEPS:
                for at in range(0, len(chunk), size := rng.choice((1, 7, 25, 50))):
                    transition(job_ids=chunk[at : at + size], from_statuses=[source], to_status=target)
    except Exception as exc:  # noqa: BLE001 (reported by the test)
        errors.append(exc)
    finally:
        connection.close()


class Consumer:
    """A feed reader whose only durable state is its log of processed events and the
    last id in it, saved together (as a real one keeps them in a file): a new
    Consumer after `kill` starts from those alone."""

    def __init__(self, client, log: list) -> None:
        self.client, self.log = client, log
        self.cursor = log[-1]["id"] if log else 0

    def poll(self, wait: int = 1) -> int:
        response = self.client.get(f"/events?after={self.cursor}&limit=997&wait={wait}")
        assert response.status_code == 200, response.content
        page = response.json()
        for event in page:
            self.log.append(event)
            self.cursor = event["id"]
        return len(page)


@override_settings(BATCHES_EVENTS_POLL_MS=50)
def test_a_consumer_sees_every_transition_once_in_order_and_resumes_after_a_kill(alice, bob, catalog):
    fs = [catalog["filesystems"]["scratch"].pk]
    tool = catalog["tools"]["echo"].pk
    batches = [
        submit_batch(user=alice, tool_id=tool, cpu=1, memory=64, filesystem_ids=fs, jobs=[{"args": {"message": "x"}}] * 2000)
        for _ in range(5)
    ]
    noise = submit_batch(user=bob, tool_id=tool, cpu=1, memory=64, filesystem_ids=fs, jobs=[{"args": {"message": "y"}}] * 200)
    ids = list(Job.objects.filter(batch__in=batches).order_by("?").values_list("pk", flat=True))
    assert len(ids) == 10_000
    shares = [ids[n::3] for n in range(3)] + [list(Job.objects.filter(batch=noise).values_list("pk", flat=True))]
    errors: list = []
    writers = [threading.Thread(target=_run_jobs, args=(share,), kwargs={"seed": n, "errors": errors}) for n, share in enumerate(shares)]
    for writer in writers:
        writer.start()

    client, log, kills = make_client(alice), [], 0
    consumer = Consumer(client, log)
    rng = random.Random(22)  # noqa: S311 (a reproducible test, not a secret)
    while any(writer.is_alive() for writer in writers):
        consumer.poll()
        if rng.random() < 0.3:
            consumer, kills = Consumer(client, log), kills + 1  # killed and started again
    for writer in writers:
        writer.join()
    assert not errors, errors
    # The housekeeping's sweeps, until they have looked at every event: each looks at a
    # bounded range of ids (jobs.batch_finished.RANGE), and ids go on from the tests
    # before this one (seen in CI: 40,800 events from id 13,140, two sweeps).
    announced, top = 0, JobEvent.objects.order_by("-id").values_list("id", flat=True).first()
    for _ in range(10):
        if FeedState.objects.filter(finished_through__gte=top).exists():
            break
        announced += record_finished_batches()
    assert announced == 6, _why_not_finished()  # bob's too, which alice never sees
    consumer = Consumer(client, log)
    while consumer.poll(wait=0):
        pass

    assert kills
    truth = list(JobEvent.objects.filter(owner=alice).order_by("id").values_list("id", "job_id", "to_status"))
    assert [(e["id"], e["job_id"], e["to_status"]) for e in log] == [
        (pk, None if job is None else str(job), status or None) for pk, job, status in truth
    ]
    # Every transition of every job exactly once, in its order; then each batch's end.
    per_job: dict = {}
    for event in log[:-5]:
        per_job.setdefault(event["job_id"], []).append(event["type"])
    assert len(per_job) == 10_000
    assert set(map(tuple, per_job.values())) == {("job.runnable", "job.starting", "job.running", "job.succeeded")}
    assert [e["type"] for e in log[-5:]] == ["batch.finished"] * 5
    assert {e["batch_id"] for e in log[-5:]} == {str(b.pk) for b in batches}
    assert all(e["counts"]["succeeded"] == 2000 for e in log[-5:])
    connection.close()


def _why_not_finished() -> str:
    """What else held a transaction open, and which batches were announced (when the
    sweep wrote fewer than all: seen once in CI on PostgreSQL)."""
    announced = list(JobEvent.objects.filter(job__isnull=True).values_list("id", "batch_id"))
    others = []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_xid::text, state, now() - xact_start, left(query, 200), application_name"
                " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            others = cursor.fetchall()
    top = JobEvent.objects.order_by("-id").values_list("id", flat=True).first()
    return f"announced {announced}; newest event {top}; other sessions {others}"


def test_a_long_poll_answers_when_an_event_commits(alice, catalog):
    fs = [catalog["filesystems"]["scratch"].pk]
    batch = submit_batch(
        user=alice, tool_id=catalog["tools"]["echo"].pk, cpu=1, memory=64, filesystem_ids=fs, jobs=[{"args": {"message": "x"}}]
    )
    job = Job.objects.get(batch=batch)
    client, answer = make_client(alice), {}

    def wait() -> None:
        started = time.monotonic()
        with override_settings(BATCHES_EVENTS_POLL_MS=50):
            answer["response"] = client.get("/events?wait=20")
        answer["seconds"] = time.monotonic() - started
        connection.close()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    transition(job_ids=[job.pk], from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    waiter.join(30)
    assert [e["type"] for e in answer["response"].json()] == ["job.runnable"]
    assert 0.4 < answer["seconds"] < 3
