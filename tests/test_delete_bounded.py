"""Deleting or cancelling a batch does bounded work whatever its size (issue 9): the
batch leaves its owner's view (or stops starting jobs) at once, and the rest goes in
chunks outside the request, resumable after a crash."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch
from jobs.logs import log_path
from jobs.models import Attempt, Job, JobEvent
from jobs.removal import delete_batches, purge_deleted_batches
from jobs.services import advance_batch_cancels, cancel_batch
from tests.conftest import submission
from tests.worker_helpers import in_process_loop

pytestmark = pytest.mark.django_db


def make(client, catalog, n):
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(n)])
    response = client.post("/batches", body, format="json")
    assert response.status_code == 201
    return response.json()["batch_id"]


def delete_queries(client, batch_id):
    with CaptureQueriesContext(connection) as queries:
        assert client.delete(f"/batches/{batch_id}").status_code == 204
    return len(queries)


def test_a_large_batch_leaves_at_once_and_its_rows_go_in_chunks(alice_client, catalog):
    small, large = make(alice_client, catalog, 1_000), make(alice_client, catalog, 5_000)
    # As the routes do, with chunks smaller than the batches.
    assert delete_batches(batches=Batch.objects.filter(pk=small), chunk=500) == 1
    assert delete_batches(batches=Batch.objects.filter(pk=large), chunk=500) == 1
    assert alice_client.get(f"/batches/{large}").status_code == 404
    assert large not in [b["batch_id"] for b in alice_client.get("/batches").json()]
    assert alice_client.get(f"/batches/{large}/jobs").status_code == 404
    left = Job.objects.filter(batch_id__in=[small, large]).count()
    assert left == 6_000 - 2 * 500, "each deletion removed one chunk, not whole batches"
    while purge_deleted_batches(budget=2_000, chunk=500):
        pass
    assert not Job.objects.filter(batch_id__in=[small, large]).exists()
    assert not Batch.objects.filter(pk__in=[small, large]).exists()


def test_the_deletion_costs_the_same_for_any_size(alice_client, catalog):
    counts = []
    for n in (600, 3_000):
        batch_id = make(alice_client, catalog, n)
        with CaptureQueriesContext(connection) as queries:
            delete_batches(batches=Batch.objects.filter(pk=batch_id), chunk=300)
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_the_request_deletes_one_chunk(alice_client, catalog):
    counts = [delete_queries(alice_client, make(alice_client, catalog, n)) for n in (1, 50)]
    assert counts[0] == counts[1], counts
    assert not Job.objects.exists() and not Batch.objects.exists(), "small batches are gone when the answer comes"


def test_a_deletion_interrupted_by_a_crash_is_finished_later(alice, alice_client, catalog, django_capture_on_commit_callbacks):
    batch_id = make(alice_client, catalog, 50)
    job = Job.objects.filter(batch_id=batch_id).first()
    Job.objects.filter(pk=job.pk).update(attempts=1)
    Attempt.objects.create(job=job, number=1, executor="local")
    log_path(job.log_id).write_text("output\n")
    # The crash: marked deleted, nothing removed yet.
    Batch.objects.filter(pk=batch_id).update(deleted_at=timezone.now())
    assert alice_client.get(f"/batches/{batch_id}").status_code == 404
    assert alice_client.get(f"/logs/{job.log_id}").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):  # the log files go after the commit
        assert purge_deleted_batches() == 50
        assert purge_deleted_batches() == 0
    assert not Batch.objects.filter(pk=batch_id).exists()
    assert not JobEvent.objects.filter(job_id=job.pk).exists() and not Attempt.objects.filter(job_id=job.pk).exists()
    assert not log_path(job.log_id).exists()


def test_deleting_twice_and_deleting_all(alice_client, bob_client, catalog):
    mine = [make(alice_client, catalog, 10) for _ in range(3)]
    theirs = make(bob_client, catalog, 10)
    assert alice_client.delete(f"/batches/{mine[0]}").status_code == 204
    assert alice_client.delete(f"/batches/{mine[0]}").status_code == 404
    assert alice_client.delete("/batches").status_code == 204
    assert alice_client.get("/batches").json() == []
    assert bob_client.get(f"/batches/{theirs}").status_code == 200


def cancel_queries(batch_id, *, chunk):
    """What `POST /batches/<id>/cancel` runs (its view calls cancel_batch and answers
    the counts), with a small chunk so that batches of a few thousand jobs show the bound."""
    with CaptureQueriesContext(connection) as queries:
        result = cancel_batch(batch=Batch.objects.get(pk=batch_id), chunk=chunk)
    return len(queries), {"changed": result.changed, "stopping": result.stopping}


def test_cancelling_a_large_batch_is_bounded_and_completes_in_the_background(alice_client, catalog):
    """Cancel of a 100,000-job batch took 17-40 s and, under a 30 s timeout, answered an
    HTML 500 with nothing cancelled."""
    small, large = make(alice_client, catalog, 600), make(alice_client, catalog, 3_000)
    (small_queries, small_body), (large_queries, large_body) = cancel_queries(small, chunk=300), cancel_queries(large, chunk=300)
    assert small_queries == large_queries, "the request's work does not grow with the batch"
    assert (small_body, large_body) == ({"changed": 600, "stopping": 0}, {"changed": 3_000, "stopping": 0})
    assert Job.objects.filter(batch_id=large, status="FAILED").count() == 300, "one chunk in the request"
    # Nothing of it starts meanwhile, and a retry waits for the cancel to complete.
    retry = alice_client.post(f"/batches/{large}/retry")
    assert retry.status_code == 409
    while advance_batch_cancels(budget=1_000):
        pass
    assert set(Job.objects.filter(batch_id__in=[small, large]).values_list("status", "reason").distinct()) == {
        ("FAILED", "Cancelled by user")
    }
    assert Batch.objects.get(pk=large).cancel_requested_at is None
    assert alice_client.post(f"/batches/{large}/retry").json() == {"changed": 3_000}


def test_a_cancelled_batch_is_not_claimed(alice, alice_client, catalog):
    batch_id = make(alice_client, catalog, 50)
    cancel_batch(batch=Batch.objects.get(pk=batch_id), chunk=10)  # 40 jobs left for the sweeps
    loop = in_process_loop()
    try:
        for _ in range(20):
            loop.step()
    finally:
        loop.stop()
    assert not Attempt.objects.filter(job__batch_id=batch_id).exists(), "no job of a cancelled batch started"
    assert set(Job.objects.filter(batch_id=batch_id).values_list("status", flat=True)) == {"FAILED"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks between two connections: PostgreSQL")
def test_a_cancel_sent_while_a_retry_commits_is_not_lost(alice, catalog):
    """A retry of a large batch takes seconds to commit; a cancel sent meanwhile saw
    every job still FAILED, changed nothing, and the retried batch then ran whole. The
    batch row orders them: the cancel waits for the retry, then cancels what it made
    runnable."""
    from jobs.services import cancel_batch, retry_failed_jobs
    from tests.worker_helpers import make_batch, race_with_open_transaction

    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(20)])
    cancel_batch(batch=batch)
    while advance_batch_cancels():
        pass
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"FAILED"}
    errors = race_with_open_transaction(
        # A retry whose commit is slow, as 100,000 rows are; the cancel comes meanwhile.
        lambda: retry_failed_jobs(jobs=Job.objects.filter(batch=batch)),
        lambda: cancel_batch(batch=Batch.objects.get(pk=batch.pk)),
    )
    assert not errors, errors
    while advance_batch_cancels():
        pass
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"FAILED"}, "the later cancel won"
