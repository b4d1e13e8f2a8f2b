"""The operators' dashboard: what runs, what waits, whose, and which workers are alive,
in a fixed number of queries whatever the number of jobs."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch
from jobs.executors.base import Capacity
from jobs.leases import register_worker
from jobs.models import Job
from tests.conftest import submission


@pytest.fixture
def operator(db) -> Client:
    """A staff user who may only view jobs and batches (not a superuser)."""
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_job", "view_batch", "view_worker"]))
    client = Client()
    client.force_login(user)
    return client


def test_the_dashboard_answers_what_runs_what_waits_and_whose(operator, alice_client, bob_client, catalog):
    alices = alice_client.post(
        "/batches", submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(4)]), format="json"
    ).json()
    bob_client.post("/batches", submission(catalog, tool="sleep", jobs=[{"args": {"seconds": 1}}]), format="json")
    Batch.objects.filter(pk=alices["batch_id"]).update(create_time=timezone.now() - timedelta(minutes=5))
    Job.objects.filter(batch_id=alices["batch_id"], index=0).update(status="SUCCEEDED")
    register_worker(executor="local", capacity=Capacity(2, 1024), lease_seconds=30, keeps_attempts=False, isolation={})
    operator.get("/admin/dashboard/")
    with CaptureQueriesContext(connection) as queries:
        response = operator.get("/admin/dashboard/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Jobs per state (5)" in page and "4 job(s) waiting to run; the oldest since" in page
    context = response.context
    assert dict(context["states"])["SUCCEEDED"] == 1 and dict(context["states"])["SUBMITTED"] == 4
    assert dict(context["per_user"]) == {"alice": 3, "bob": 1}
    assert dict(context["per_tool"]) == {"echo": 3, "sleep": 1}
    assert 300 <= context["oldest_waiting_seconds"] < 400
    assert [w["cpus"] for w in context["workers"]] == [2] and context["workers"][0]["heartbeat_age"] < 5
    fixed = len(queries.captured_queries)
    # Ten more batches of jobs change nothing in the number of queries.
    for _ in range(10):
        alice_client.post("/batches", submission(catalog), format="json")
    with CaptureQueriesContext(connection) as queries:
        operator.get("/admin/dashboard/")
    assert len(queries.captured_queries) == fixed, [q["sql"][:120] for q in queries.captured_queries]
    assert "/admin/dashboard/" in operator.get("/admin/").content.decode()


def test_the_dashboard_is_for_staff_only(alice, db):
    client = Client()
    assert client.get("/admin/dashboard/").status_code == 302
    client.force_login(alice)
    assert client.get("/admin/dashboard/").status_code == 302


def test_the_dashboard_is_for_staff_who_may_view_jobs(db):
    """Any staff account saw every user's job counts, whatever its permissions."""
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    bare = User.objects.create_user("bare-staff", is_staff=True)
    client = Client()
    client.force_login(bare)
    assert client.get("/admin/dashboard/").status_code == 403
    bare.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(User.objects.get(pk=bare.pk))
    assert client.get("/admin/dashboard/").status_code == 200


def test_jobs_are_found_by_their_owners_name_in_any_case(admin_client, alice, catalog):
    """Batch search by owner ignored case, job search did not (LOAD-USER-01 found 0)."""
    from jobs.load import generate_load

    generate_load(batches=1, jobs=3, users=1)
    listed = admin_client.get("/admin/jobs/job/", {"q": "LOAD-USER-01"}).context["cl"].result_list
    assert len(listed) == 3


def test_a_deleted_batchs_jobs_leave_the_operators_pages_at_once(admin_client, alice_client, catalog):
    """Its jobs go 5,000 per chunk after the delete; meanwhile the job list showed them
    and the dashboard counted them as waiting (90,587 of a 100,000-job batch)."""
    from jobs.removal import delete_batches
    from tests.conftest import submission

    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(6)])
    batch_id = alice_client.post("/batches", body, format="json").json()["batch_id"]
    delete_batches(batches=Batch.objects.filter(pk=batch_id), chunk=2)  # as the route does, in chunks of 2
    assert Job.objects.filter(batch_id=batch_id).count() == 4, "rows still there, on their way out"
    assert list(admin_client.get("/admin/jobs/job/").context["cl"].result_list) == []
    page = admin_client.get("/admin/dashboard/")
    assert page.context["total"] == 0 and page.context["queue_depth"] == 0 and page.context["oldest_waiting"] is None
