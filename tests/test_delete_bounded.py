"""Deleting a batch does bounded work whatever its size (issue 9): the batch leaves
its owner's view at once, and its rows and logs go in chunks outside the request,
resumable after a crash."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import batches.services
from batches.models import Batch
from batches.services import purge_deleted_batches
from jobs.logs import log_path
from jobs.models import Attempt, Job, JobEvent
from tests.conftest import submission

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


def test_a_large_batch_leaves_at_once_and_its_rows_go_in_chunks(alice_client, catalog, monkeypatch):
    monkeypatch.setattr(batches.services, "PURGE_CHUNK", 500)
    small, large = make(alice_client, catalog, 1_000), make(alice_client, catalog, 5_000)
    assert alice_client.delete(f"/batches/{small}").status_code == 204
    assert alice_client.delete(f"/batches/{large}").status_code == 204
    assert alice_client.get(f"/batches/{large}").status_code == 404
    assert large not in [b["batch_id"] for b in alice_client.get("/batches").json()]
    assert alice_client.get(f"/batches/{large}/jobs").status_code == 404
    left = Job.objects.filter(batch_id__in=[small, large]).count()
    assert left == 6_000 - 2 * 500, "each request removed one chunk, not whole batches"
    while purge_deleted_batches(budget=2_000):
        pass
    assert not Job.objects.filter(batch_id__in=[small, large]).exists()
    assert not Batch.objects.filter(pk__in=[small, large]).exists()


def test_the_request_costs_the_same_for_any_size(alice_client, catalog, monkeypatch):
    monkeypatch.setattr(batches.services, "PURGE_CHUNK", 300)
    counts = [delete_queries(alice_client, make(alice_client, catalog, n)) for n in (600, 3_000)]
    assert counts[0] == counts[1], counts


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
