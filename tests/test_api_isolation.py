"""Tenants: a user sees and changes only their own batches, jobs and logs. Another
user's ids answer 404 on every route and method (never 403, so ids leak nothing); staff
get no wider view through the API (the admin is their console); anonymous callers get
401 with `WWW-Authenticate: Bearer`."""

from typing import Any

import pytest

from batches.models import Batch
from jobs.logs import log_path
from jobs.models import Job, JobEvent
from jobs.statuses import Status
from jobs.transitions import transition
from tests.conftest import submission


@pytest.fixture
def alices(alice_client, catalog) -> dict[str, Any]:
    """Alice's batch with one FAILED job (so retry has work) and a log on disk."""
    response = alice_client.post("/batches", submission(catalog), format="json")
    assert response.status_code == 201
    batch_id = response.json()["batch_id"]
    jobs = list(Job.objects.filter(batch_id=batch_id).order_by("index"))
    transition(job_ids=[jobs[0].pk], from_statuses=[Status.SUBMITTED], to_status=Status.FAILED, reason="exit code 1")
    path = log_path(jobs[0].log_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"secret output of alice\n")
    yield {"batch": batch_id, "job": str(jobs[0].pk), "other_job": str(jobs[1].pk), "log": str(jobs[0].log_id)}
    path.unlink(missing_ok=True)


# (method, url template, the owner's status). Every route that names one of alice's objects.
OBJECT_ROUTES = [
    ("get", "/batches/{batch}", 200),
    ("get", "/batches/{batch}/jobs", 200),
    ("get", "/batches/{batch}/jobs/{job}", 200),
    ("get", "/batches/{batch}/jobs/{job}/events", 200),
    ("get", "/jobs/{job}", 200),
    ("get", "/logs/{log}", 200),
    ("post", "/batches/{batch}/jobs/{other_job}/cancel", 200),
    ("post", "/batches/{batch}/retry", 200),
    ("post", "/batches/{batch}/cancel", 200),
    ("delete", "/batches/{batch}", 204),
]


def snapshot() -> tuple:
    return (
        list(Batch.objects.order_by("pk").values_list("pk", "owner_id")),
        list(Job.objects.order_by("pk").values_list("pk", "status", "reason", "attempts")),
        JobEvent.objects.count(),
    )


@pytest.mark.parametrize(("method", "template", "owner_status"), OBJECT_ROUTES, ids=[f"{m} {t}" for m, t, _ in OBJECT_ROUTES])
@pytest.mark.parametrize("caller", ["bob_client", "root_client"])
def test_other_users_and_staff_get_404(request, alices, caller, method, template, owner_status):
    client = request.getfixturevalue(caller)
    before = snapshot()
    response = getattr(client, method)(template.format(**alices))
    assert response.status_code == 404, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert "alice" not in response.content.decode()
    assert snapshot() == before


@pytest.mark.parametrize(("method", "template", "owner_status"), OBJECT_ROUTES, ids=[f"{m} {t}" for m, t, _ in OBJECT_ROUTES])
def test_anonymous_gets_401(anon_client, alices, method, template, owner_status):
    before = snapshot()
    response = getattr(anon_client, method)(template.format(**alices))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"
    assert snapshot() == before


@pytest.mark.parametrize(("method", "template", "owner_status"), OBJECT_ROUTES, ids=[f"{m} {t}" for m, t, _ in OBJECT_ROUTES])
def test_owner_gets_through(alice_client, alices, method, template, owner_status):
    response = getattr(alice_client, method)(template.format(**alices))
    assert response.status_code == owner_status, response.content


def test_owner_reads_the_log_as_text(alice_client, alices):
    response = alice_client.get(f"/logs/{alices['log']}")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"secret output of alice\n"
    assert response["X-Log-Size"] == "23"
    assert alice_client.get(f"/logs/{alices['log']}?offset=7").content == b"output of alice\n"


COLLECTION_ROUTES = [("get", "/batches"), ("post", "/batches"), ("delete", "/batches"), ("get", "/tools"), ("get", "/filesystems")]


@pytest.mark.parametrize(("method", "url"), COLLECTION_ROUTES)
def test_anonymous_gets_401_on_collections(anon_client, catalog, method, url):
    before = snapshot()
    kwargs = {"data": submission(catalog), "format": "json"} if method == "post" else {}
    response = getattr(anon_client, method)(url, **kwargs)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert snapshot() == before


def test_tool_detail_needs_a_token(anon_client, catalog):
    response = anon_client.get(f"/tools/{catalog['tools']['echo'].pk}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_lists_show_only_the_callers_batches(alices, bob_client, root_client, catalog):
    assert bob_client.get("/batches").json() == []
    assert root_client.get("/batches").json() == []
    bobs = bob_client.post("/batches", submission(catalog), format="json").json()
    assert [b["batch_id"] for b in bob_client.get("/batches").json()] == [bobs["batch_id"]]


def test_delete_all_by_bob_leaves_alices_batches(alices, alice_client, bob_client, root_client, catalog):
    bob_client.post("/batches", submission(catalog), format="json")
    assert bob_client.delete("/batches").status_code == 204
    assert root_client.delete("/batches").status_code == 204
    assert list(Batch.objects.values_list("owner__username", flat=True)) == ["alice"]
    assert Job.objects.filter(batch_id=alices["batch"]).count() == 2
    assert len(alice_client.get("/batches").json()) == 1


def test_a_job_must_belong_to_the_named_batch(alices, alice_client, bob_client, catalog):
    """Alice's job under another batch id (hers or bob's) is not found either."""
    bobs = bob_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    second = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    for batch in (bobs, second):
        assert alice_client.get(f"/batches/{batch}/jobs/{alices['job']}").status_code == 404
        assert alice_client.post(f"/batches/{batch}/jobs/{alices['other_job']}/cancel").status_code == 404
        assert bob_client.get(f"/batches/{batch}/jobs/{alices['job']}").status_code == 404
    assert Job.objects.get(pk=alices["other_job"]).status == Status.SUBMITTED


def test_unknown_ids_look_like_other_users_ids(alice_client, alices, bob_client):
    """Same status and body for "exists but not yours" and "does not exist"."""
    missing = alice_client.get("/batches/00000000-0000-0000-0000-000000000000")
    foreign = bob_client.get(f"/batches/{alices['batch']}")
    assert missing.status_code == foreign.status_code == 404
    assert {k: v for k, v in missing.json().items() if k != "detail"} == {k: v for k, v in foreign.json().items() if k != "detail"}
    assert alices["batch"] not in foreign.json()["detail"]
