"""Each list route runs the same number of queries whatever the page size, and
`GET /batches/<id>` counts jobs with one GROUP BY instead of loading them."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from batches.models import Batch, Filesystem, Tool
from jobs.executors.base import Outcome
from jobs.models import Job, JobEvent
from jobs.statuses import Status
from jobs.submission import submit_batch
from jobs.transitions import transition
from tests.conftest import submission
from tests.test_api_contract import finish, run_attempts
from tests.worker_helpers import make_batch

PAGE_SIZES = (1, 10, 100)


def queries_for(client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return [q["sql"] for q in captured.captured_queries]


def assert_constant(client, url: str, expected: int) -> None:
    client.get(url)  # warm-up: the token's last_used_at is written at most once a minute
    counts = {}
    for size in PAGE_SIZES:
        sep = "&" if "?" in url else "?"
        response = client.get(f"{url}{sep}limit={size}")
        assert len(response.json()) == size, "the fixture must have enough rows for a full page"
        counts[size] = len(queries_for(client, f"{url}{sep}limit={size}"))
    assert counts == dict.fromkeys(PAGE_SIZES, expected), counts


@pytest.fixture
def many_batches(alice, catalog):
    fs = [catalog["filesystems"]["scratch"].pk]
    for _ in range(101):
        submit_batch(
            user=alice, tool_id=catalog["tools"]["echo"].pk, cpu=1, memory=64, filesystem_ids=fs, jobs=[{"args": {"message": "x"}}]
        )


def test_batch_list(alice_client, many_batches):
    # 1 token (with its user), 2 batches joined with their tool, 3 the page's filesystems,
    # 4 the page's dependencies.
    assert_constant(alice_client, "/batches", 4)


def test_job_list(alice_client, catalog):
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(101)])
    batch_id = alice_client.post("/batches", body, format="json").json()["batch_id"]
    # 1 token, 2 the batch (owner check) with its tool, 3 the page of jobs; the page's
    # jobs are in line, so what holds them (jobs.waiting.list_reasons), once for the
    # page: 4-6 the users' standings and live jobs (shares, usage, live attempts), 7 the
    # page's jobs with a live attempt.
    assert_constant(alice_client, f"/batches/{batch_id}/jobs", 7)
    assert_constant(alice_client, f"/batches/{batch_id}/jobs?status=SUBMITTED", 7)
    # No job in line on the page: none of that.
    transition(
        job_ids=list(Job.objects.filter(batch_id=batch_id).values_list("pk", flat=True)),
        from_statuses=[Status.SUBMITTED],
        to_status=Status.FAILED,
        reason="ended for the test",
    )
    assert_constant(alice_client, f"/batches/{batch_id}/jobs", 3)


def test_tool_list(alice_client, db):
    Tool.objects.bulk_create(Tool(name=f"tool-{i:03}", command=["/bin/true"]) for i in range(101))
    # 1 token, 2 the page of tools.
    assert_constant(alice_client, "/tools", 2)


def test_filesystem_list(alice, alice_client, db):
    Filesystem.objects.bulk_create(Filesystem(name=f"fs-{i:03}", path=f"/tmp/fs-{i}", public=i % 2 == 0) for i in range(202))
    for fs in Filesystem.objects.filter(public=False):
        fs.users.add(alice)
    # 1 token, 2 the page of filesystems (public or granted, one query with joins).
    assert_constant(alice_client, "/filesystems", 2)


def test_event_list(alice_client, catalog):
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    job = Job.objects.filter(batch_id=batch_id).first()
    JobEvent.objects.bulk_create(JobEvent(job=job, from_status=Status.RUNNABLE, to_status=Status.PENDING) for _ in range(101))
    # 1 token, 2 the job (owner check through its batch), 3 the page of events (the
    # shared job lookup no longer prefetches the batch's filesystems, which only the
    # job's own page shows).
    assert_constant(alice_client, f"/batches/{batch_id}/jobs/{job.pk}/events", 3)


def test_attempt_list(alice_client, catalog):
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    job = Job.objects.filter(batch_id=batch_id).first()
    run_attempts(
        job.pk,
        [Outcome(str(job.pk), n, succeeded=False, reason="worker lost", reason_code="worker_lost") for n in range(1, 102)],
    )
    # 1 token, 2 the job (owner check through its batch), 3 the page of attempts.
    assert_constant(alice_client, f"/batches/{batch_id}/jobs/{job.pk}/attempts", 3)


def test_batch_status_is_one_group_by(alice_client, catalog):
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(500)])
    batch_id = alice_client.post("/batches", body, format="json").json()["batch_id"]
    alice_client.get(f"/batches/{batch_id}")
    sql = queries_for(alice_client, f"/batches/{batch_id}")
    # 1 token, 2 the counts, the batch's owner checked in the same query's join.
    assert len(sql) == 2, sql
    assert "owner_id" in sql[1]
    job_queries = [q for q in sql if re.search(r'FROM "?jobs_job"?', q)]
    assert len(job_queries) == 1
    assert "GROUP BY" in job_queries[0] and "COUNT(" in job_queries[0].upper()
    assert alice_client.get(f"/batches/{batch_id}").json()["submitted"] == 500


def test_batch_detail_cost_does_not_grow(alice_client, catalog):
    small = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(1000)])
    big = alice_client.post("/batches", body, format="json").json()["batch_id"]
    alice_client.get(f"/batches/{small}")
    assert len(queries_for(alice_client, f"/batches/{small}")) == len(queries_for(alice_client, f"/batches/{big}"))
    assert Batch.objects.count() == 2


def test_job_detail_is_three_queries_and_a_waiting_jobs_place_costs_the_same_whatever_the_line(alice, bob, alice_client, catalog):
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    job = Job.objects.filter(batch_id=batch_id).first()
    url = f"/batches/{batch_id}/jobs/{job.pk}"
    alice_client.get(url)
    waiting = queries_for(alice_client, url)
    # Other users' batches in line change the answer, not its cost.
    for user in (alice, bob):
        for _ in range(3):
            make_batch(user, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(20)])
    assert len(queries_for(alice_client, url)) == len(waiting), waiting
    assert len(waiting) <= 16, waiting
    finish(job.pk)
    sql = queries_for(alice_client, url)
    # 1 token, 2 the job with its batch (owner check in the join), 3 the batch's filesystem ids
    # (no attempt ever started: its usage costs nothing).
    assert len(sql) == 3, sql
    assert alice_client.get(url).json()["hardware"]["filesystems"] == [str(catalog["filesystems"]["scratch"].pk)]
    other = Job.objects.filter(batch_id=batch_id).exclude(pk=job.pk).get()
    run_attempts(other.pk, [Outcome(str(other.pk), 1, succeeded=True, exit_code=0, reason_code="succeeded")])
    # ... 4 its last ended attempt (usage, signal).
    sql = queries_for(alice_client, f"/batches/{batch_id}/jobs/{other.pk}")
    assert len(sql) == 4, sql
