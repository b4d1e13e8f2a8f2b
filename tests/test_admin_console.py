"""The operators' console smoothed (issue 21, "Admin"): the dashboard's refresh,
throughput, expected ends and recent failures; the job list's badges, reasons and
durations; Cancel and Retry on batch and job pages through the list actions' services;
a batch's failures per reason; the attempts and workers pages; the login lockouts on
the home page. What is visual is checked in a browser too (tests/test_admin_browser.py)."""

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch
from jobs import activity, batch_admin
from jobs.models import Attempt, Job, JobEvent, Worker
from jobs.statuses import CANCELLED_REASON, Status
from jobs.transitions import transition
from tests.conftest import make_client, submission

pytestmark = pytest.mark.django_db


def submit(user: User, catalog: dict[str, Any], n: int, name: str = "") -> Batch:
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(n)])
    if name:
        body["name"] = name
    response = make_client(user).post("/batches", body, format="json")
    assert response.status_code == 201, response.content
    return Batch.objects.get(pk=response.json()["batch_id"])


def run(jobs: list[Job], *, to: str, reason: str = "", seconds: float = 1.234, at: Any = None) -> None:
    """Take `jobs` through the state machine to `to`, each having run `seconds`."""
    ids = [job.pk for job in jobs]
    start = (at or timezone.now()) - timedelta(seconds=seconds)
    transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE, now=start)
    transition(job_ids=ids, from_statuses=[Status.RUNNABLE], to_status=Status.STARTING, now=start)
    transition(job_ids=ids, from_statuses=[Status.STARTING], to_status=Status.RUNNING, now=start)
    if to != Status.RUNNING:
        transition(job_ids=ids, from_statuses=[Status.RUNNING], to_status=to, reason=reason, now=start + timedelta(seconds=seconds))


def viewer_client() -> Client:
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_", content_type__app_label__in=["batches", "jobs"]))
    client = Client()
    client.force_login(viewer)
    return client


# The dashboard


def test_the_dashboard_refreshes_itself_and_says_so(admin_client):
    page = admin_client.get("/admin/dashboard/").content.decode()
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "This page refreshes itself every 10 s" in page and 'href="?refresh=0"' in page
    stopped = admin_client.get("/admin/dashboard/", {"refresh": "0"}).content.decode()
    assert 'http-equiv="refresh"' not in stopped and "Not refreshing" in stopped


def test_the_dashboard_shows_throughput_expected_ends_and_recent_failures(admin_client, alice, bob, catalog):
    busy = submit(alice, catalog, 10, name="half done")
    jobs = list(Job.objects.filter(batch=busy).order_by("index"))
    run(jobs[:4], to=Status.SUCCEEDED)
    run(jobs[4:5], to=Status.FAILED, reason="exit code 3")
    run(jobs[5:6], to=Status.RUNNING)
    idle = submit(bob, catalog, 3, name="not started")

    response = admin_client.get("/admin/dashboard/")
    figures = response.context
    page = response.content.decode()
    assert figures["activity"].finished == 5 and figures["activity"].failed == 1
    assert "5 job(s) ended in the last" in page and "(4 succeeded, 1 failed)" in page
    assert "5.0 per minute" in page  # measured over a minute at least: not 300 a minute after one second
    rows = {row["pk"]: row for row in figures["running_batches"]}
    assert list(rows) == [busy.pk, idle.pk]  # with jobs running first
    # 5 ended since it was created, a moment ago: the other 5 end in about as long.
    assert rows[busy.pk]["remaining"] == 5 and rows[busy.pk]["eta"] is not None
    assert rows[idle.pk]["eta"] is None and "unknown: none ended lately" in page
    failure = figures["activity"].failures
    assert [(f["job_id"], f["reason"]) for f in failure] == [(jobs[4].pk, "exit code 3")]
    assert f"/admin/jobs/job/{jobs[4].pk}/change/" in page and "exit code 3" in page


def test_the_dashboards_rates_come_from_the_newest_events_only(admin_client, alice, catalog, monkeypatch):
    """Busier than EVENT_WINDOW events in ten minutes, the span shrinks to what the
    newest events cover: a bounded read, and still a rate."""
    batch = submit(alice, catalog, 6)
    jobs = list(Job.objects.filter(batch=batch).order_by("index"))
    run(jobs[:3], to=Status.SUCCEEDED, at=timezone.now() - timedelta(minutes=5))
    run(jobs[3:], to=Status.SUCCEEDED)  # 4 events each: the last 12 of 24
    monkeypatch.setattr(activity, "EVENT_WINDOW", 12)
    figures = admin_client.get("/admin/dashboard/").context
    assert figures["activity"].finished == 3
    assert "newest 12 state changes" in figures["activity"].cover
    monkeypatch.setattr(activity, "EVENT_WINDOW", 1000)
    assert admin_client.get("/admin/dashboard/").context["activity"].finished == 6


def test_the_dashboard_costs_the_same_queries_whatever_the_jobs(admin_client, alice, catalog):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/dashboard/").status_code == 200
        return len(captured.captured_queries)

    batch = submit(alice, catalog, 3)
    run(list(Job.objects.filter(batch=batch))[:2], to=Status.FAILED, reason="exit code 1")
    few = queries()
    for _ in range(3):
        more = submit(alice, catalog, 20)
        run(list(Job.objects.filter(batch=more))[:15], to=Status.FAILED, reason="exit code 2")
    assert queries() == few


# The job list


def test_the_job_list_has_badges_reasons_said_once_and_durations_to_the_millisecond(admin_client, alice, catalog):
    batch = submit(alice, catalog, 4)
    jobs = list(Job.objects.filter(batch=batch).order_by("index"))
    run(jobs[:1], to=Status.SUCCEEDED, seconds=1.234)
    run(jobs[1:2], to=Status.FAILED, reason="exit code 3", seconds=0.004)
    # A batch's jobs are next to each other in the list (newest first), whatever their order within it.
    waiting = submit(alice, catalog, 3)
    transition(
        job_ids=list(Job.objects.filter(batch=waiting).values_list("pk", flat=True)),
        from_statuses=[Status.SUBMITTED],
        to_status=Status.RUNNABLE,
        reason="Waiting for a worker",
    )
    page = admin_client.get("/admin/jobs/job/").content.decode()
    for status in ("succeeded", "failed", "runnable"):
        assert f'class="status-badge status-{status}"' in page, status
    assert ">1.23 s<" in page and ">0.004 s<" in page and "0.0 s" not in page
    # The waiting reason once, then "same as above" with the reason in its tooltip.
    assert page.count(">Waiting for a worker<") == 1
    assert page.count('title="Waiting for a worker">↑ same as above') == 2
    # The duration's tooltip to the millisecond (start and stop within one second).
    start = timezone.localtime(Job.objects.get(pk=jobs[1].pk).start_time).strftime("%H:%M:%S.%f")[:-3]
    assert start in page


# Buttons on the batch and job pages


def test_a_batch_page_cancels_and_retries_with_buttons_through_the_list_actions_services(admin_client, alice, catalog, monkeypatch):
    batch = submit(alice, catalog, 3)
    page = admin_client.get(f"/admin/batches/batch/{batch.pk}/change/").content.decode()
    assert f'action="/admin/batches/batch/{batch.pk}/cancel/"' in page and "csrfmiddlewaretoken" in page
    called = []
    cancel_batch = batch_admin.cancel_batch

    def spy(**kwargs: Any) -> Any:
        called.append(kwargs["batch"].pk)
        return cancel_batch(**kwargs)

    monkeypatch.setattr(batch_admin, "cancel_batch", spy)
    assert admin_client.get(f"/admin/batches/batch/{batch.pk}/cancel/").status_code == 405  # a POST only
    response = admin_client.post(f"/admin/batches/batch/{batch.pk}/cancel/", follow=True)
    assert response.redirect_chain[-1][0] == f"/admin/batches/batch/{batch.pk}/change/"
    assert called == [batch.pk]
    assert "Cancelling 1 batch(es): 3 queued job(s), 0 running one(s) once they stop." in [str(m) for m in response.context["messages"]]
    assert set(Job.objects.filter(batch=batch).values_list("status", "reason")) == {(Status.FAILED, CANCELLED_REASON)}
    response = admin_client.post(f"/admin/batches/batch/{batch.pk}/retry/", follow=True)
    assert "Retried 3 job(s)." in [str(m) for m in response.context["messages"]]
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {Status.RUNNABLE}


def test_a_job_page_cancels_and_retries_one_job(admin_client, alice, catalog):
    batch = submit(alice, catalog, 2)
    job, other = Job.objects.filter(batch=batch).order_by("index")
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert f'action="/admin/jobs/job/{job.pk}/cancel/"' in page
    assert 'disabled title="Only a FAILED job is retried."' in page
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/cancel/", follow=True)
    assert "Cancelled 1 job(s); 0 of them stop once their attempt has." in [str(m) for m in response.context["messages"]]
    assert Job.objects.get(pk=job.pk).status == Status.FAILED and Job.objects.get(pk=other.pk).status == Status.SUBMITTED
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/retry/", follow=True)
    assert "Retried 1 job(s)." in [str(m) for m in response.context["messages"]]
    assert Job.objects.get(pk=job.pk).status == Status.RUNNABLE
    assert JobEvent.objects.filter(job=job).count() == 2  # FAILED, then RUNNABLE: the state machine's events


def test_the_buttons_need_the_change_permission_and_the_csrf_token(alice, root, catalog):
    batch = submit(alice, catalog, 2)
    job = Job.objects.filter(batch=batch).first()
    viewer = viewer_client()
    for url in (f"/admin/batches/batch/{batch.pk}/change/", f"/admin/jobs/job/{job.pk}/change/"):
        page = viewer.get(url).content.decode()
        assert 'class="object-buttons"' not in page, url
    for url in (f"/admin/batches/batch/{batch.pk}/cancel/", f"/admin/jobs/job/{job.pk}/cancel/", f"/admin/batches/batch/{batch.pk}/retry/"):
        assert viewer.post(url).status_code == 403, url
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(root)
    assert strict.post(f"/admin/batches/batch/{batch.pk}/cancel/").status_code == 403
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {Status.SUBMITTED}


# A batch's failures per reason


def test_a_batch_page_counts_its_failures_per_reason_among_a_bounded_sample(admin_client, alice, catalog, monkeypatch):
    batch = submit(alice, catalog, 6)
    jobs = list(Job.objects.filter(batch=batch).order_by("index"))
    run(jobs[:3], to=Status.FAILED, reason="exit code 3")
    run(jobs[3:5], to=Status.FAILED, reason="killed: out of memory (limit 256 MiB)")
    page = admin_client.get(f"/admin/batches/batch/{batch.pk}/change/").content.decode()
    assert activity.failure_reasons(batch_id=batch.pk) == [("exit code 3", 3), ("killed: out of memory (limit 256 MiB)", 2)]
    assert '<td class="failure-count">3</td><td class="failure-reason">exit code 3</td>' in page
    assert "counted among" not in page
    monkeypatch.setattr(activity, "REASON_SAMPLE", 4)
    monkeypatch.setattr(batch_admin, "REASON_SAMPLE", 4)
    assert sum(n for _, n in activity.failure_reasons(batch_id=batch.pk)) == 4
    assert "counted among the first 4 of its 5" in admin_client.get(f"/admin/batches/batch/{batch.pk}/change/").content.decode()


# Attempts, workers, titles


def test_the_attempts_list_is_titled_plainly_with_short_ids_and_clipped_reasons(admin_client, alice, catalog):
    batch = submit(alice, catalog, 1)
    job = Job.objects.get(batch=batch)
    reason = "attempt lost: worker lab-node-17.example.org:4242 stopped renewing its lease (no heartbeat for 95 s)"
    now = timezone.now()
    attempt = Attempt.objects.create(
        job=job,
        number=1,
        executor="local",
        external_id="4242",
        state="ENDED",
        start_time=now,
        end_time=now + timedelta(milliseconds=340),
        reason=reason,
    )
    response = admin_client.get("/admin/jobs/attempt/")
    page = response.content.decode()
    assert response.context["title"] == "Attempts" and "Select attempt" not in page
    assert f'title="{job.pk}">…{str(job.pk)[-12:]}</a>' in page and f">{job.pk}<" not in page
    assert f'<span class="clipped" title="{reason}">' in page
    assert ">0.340 s<" in page
    detail = admin_client.get(f"/admin/jobs/attempt/{attempt.pk}/change/")
    assert "View attempt" not in detail.content.decode() and detail.context["title"] == f"Attempt {attempt.pk}"
    assert viewer_client().get("/admin/jobs/job/").context["title"] == "Jobs"
    assert admin_client.get("/admin/jobs/worker/").context["title"] == "Workers"


def test_an_active_worker_cannot_be_deleted_and_its_isolation_reads_as_lines(admin_client):
    now = timezone.now()
    isolation = {"sandbox": True, "cgroup_memory": False, "job_user": True}
    active = Worker.objects.create(
        name="vm:1", node="vm", cpus=2, memory_mib=1024, lease_expires=now + timedelta(seconds=30), isolation=isolation
    )
    page = admin_client.get(f"/admin/jobs/worker/{active.pk}/change/").content.decode()
    assert "/delete/" not in page
    assert "cgroup_memory: not in force" in page and "sandbox: in force" in page and '{"sandbox"' not in page
    assert admin_client.post(f"/admin/jobs/worker/{active.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Worker.objects.filter(pk=active.pk).exists()
    stopped = Worker.objects.create(name="vm:2", node="vm", cpus=2, memory_mib=1024, lease_expires=now, state="STOPPED")
    assert "/delete/" in admin_client.get(f"/admin/jobs/worker/{stopped.pk}/change/").content.decode()
    admin_client.post(f"/admin/jobs/worker/{stopped.pk}/delete/", {"post": "yes"})
    assert not Worker.objects.filter(pk=stopped.pk).exists()


# The login lockouts


def test_the_home_page_groups_the_login_lockouts_and_an_operator_lifts_one(admin_client, settings, db):
    page = admin_client.get("/admin/").content.decode()
    assert "Login lockouts" in page and "Access attempts" in page
    assert "Access logs" not in page and "Access failure logs" not in page
    assert admin_client.get("/admin/axes/accesslog/").status_code == 404
    User.objects.create_user("ops", password="the right password", is_staff=True)  # noqa: S106
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "ops", "password": "wrong"})
    locked = client.post("/admin/login/", {"username": "ops", "password": "the right password"})
    assert locked.status_code in (403, 429), "not locked out"
    # Lifted by deleting the user's row on the lockouts' page.
    attempt = AccessAttempt.objects.get(username="ops")
    assert "Locked Out" in admin_client.get("/admin/axes/accessattempt/").content.decode()
    admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert client.post("/admin/login/", {"username": "ops", "password": "the right password"}).status_code == 302
