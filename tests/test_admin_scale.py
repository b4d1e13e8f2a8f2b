"""The admin at scale, in miniature: what keeps every page fast at a million jobs is a
fixed number of queries per page (pinned here at two sizes), counts that stop at a cap,
and searches that compare ids on their indexes. bench/admin_at_scale.py times the pages
against `generate_load`'s million jobs."""

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client

from batches.models import Batch
from core import admin_paging
from jobs.admin import JobAdmin
from jobs.load import generate_load
from jobs.logs import log_path
from jobs.models import Attempt, Job, JobEvent, Worker

pytestmark = pytest.mark.django_db


def queries_of(client: Client, url: str) -> int:
    count = [0]

    def counting(execute, sql, *args):
        count[0] += 1
        return execute(sql, *args)

    with connection.execute_wrapper(counting):
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return count[0]


def test_generate_load_makes_jobs_in_every_state_with_their_attempts_and_events():
    summary = generate_load(batches=3, jobs=200, users=2)
    assert (summary.batches, summary.jobs, summary.users) == (3, 200, 2)
    assert Batch.objects.filter(name__startswith="load ").count() == 3
    assert sorted(Batch.objects.values_list("n_jobs", flat=True)) == [66, 67, 67]
    counts = {status: Job.objects.filter(status=status).count() for status in ["SUCCEEDED", "FAILED", "RUNNABLE", "PENDING", "SUBMITTED"]}
    assert sum(counts.values()) == 200
    assert counts["SUCCEEDED"] > counts["FAILED"] > 0 and counts["SUBMITTED"] > 0
    ended = Job.objects.filter(status__in=["SUCCEEDED", "FAILED"])
    assert Attempt.objects.count() == JobEvent.objects.count() == ended.count()
    assert not ended.filter(worker__isnull=True).exists() and not ended.filter(stop_time__isnull=True).exists()
    assert set(Job.objects.filter(status="FAILED").values_list("reason", flat=True)) <= {
        "exit code 1",
        "exit code 2",
        "timed out after 60 s",
        "killed: out of memory (limit 256 MiB)",
    }
    assert not Job.objects.filter(status="FAILED", reason="").exists()
    assert set(Attempt.objects.filter(job__status="FAILED").values_list("charged", flat=True)) == {True}
    assert Worker.objects.filter(name__startswith="load-worker-").count() == 4


def test_generate_load_command_prints_a_summary_and_refuses_nonsense(capsys):
    call_command("generate_load", "--batches", "2", "--jobs", "10", "--users", "1")
    assert "created 2 batch(es) with 10 job(s) for 1 user(s)" in capsys.readouterr().out
    with pytest.raises(Exception, match="one job per batch"):
        call_command("generate_load", "--batches", "5", "--jobs", "2")
    for days in ("-30", "99999999"):  # batches in the future; an OverflowError traceback
        with pytest.raises(Exception, match="between 0 and 3650"):
            call_command("generate_load", "--batches", "1", "--jobs", "1", "--days", days)


def test_jobs_created_on_a_day_are_those_of_the_batches_created_that_day(admin_client):
    """The date filter reads the batches' time (which their jobs share), not a scan of
    the jobs' own column."""
    generate_load(batches=6, jobs=60, users=1, days=30)
    for batch in Batch.objects.all():
        assert set(Job.objects.filter(batch=batch).values_list("create_time", flat=True)) == {batch.create_time}
    newest = Batch.objects.order_by("-create_time").first()
    since = newest.create_time.strftime("%Y-%m-%d %H:%M:%S+00:00")
    listed = admin_client.get("/admin/jobs/job/", {"batch__create_time__gte": since}).context["cl"].result_list
    assert {job.pk for job in listed} == set(Job.objects.filter(create_time__gte=newest.create_time).values_list("pk", flat=True))


PAGES = [
    "/admin/dashboard/",
    "/admin/batches/batch/",
    "/admin/batches/batch/?q=load-user-01",
    "/admin/jobs/job/",
    "/admin/jobs/job/?status__exact=FAILED",
    "/admin/jobs/job/?batch__create_time__gte=2000-01-01+00%3A00%3A00%2B00%3A00",
    "/admin/jobs/job/?q=load-user-01",
    "/admin/jobs/attempt/",
    "/admin/jobs/worker/",
]


def test_every_page_runs_the_same_queries_at_any_size(admin_client):
    """Pinned: a page's queries do not grow with the rows it shows (an attempt's job
    column used to cost one query per row)."""
    generate_load(batches=4, jobs=160, users=2)  # 40 a batch: every state
    small = {url: queries_of(admin_client, url) for url in PAGES}
    generate_load(batches=12, jobs=600, users=2)
    large = {url: queries_of(admin_client, url) for url in PAGES}
    assert large == small
    assert max(small.values()) <= 12, small


def test_counts_stop_at_the_cap_and_a_page_past_it_shows_the_last_one(admin_client, monkeypatch):
    monkeypatch.setattr(admin_paging, "COUNT_CAP", 20)
    monkeypatch.setattr(JobAdmin, "list_per_page", 10)
    generate_load(batches=1, jobs=250, users=1)
    page = admin_client.get("/admin/jobs/job/").content.decode()
    assert "20+ jobs (counted to 20" in page
    # Django's admin answered a page past the end with its "database error" page.
    response = admin_client.get("/admin/jobs/job/?p=5000")
    assert response.status_code == 200
    newest = list(Job.objects.order_by("-id").values_list("pk", flat=True)[:20])
    assert [job.pk for job in response.context["cl"].result_list] == newest[10:20]  # page 2, the last offered
    # Under the cap, the exact count.
    pending = Job.objects.filter(status="PENDING").count()
    assert 0 < pending < 20
    assert f"{pending} jobs" in admin_client.get("/admin/jobs/job/?status__exact=PENDING").content.decode()


def test_job_search_matches_ids_exactly_on_their_indexes(admin_client):
    generate_load(batches=2, jobs=20, users=2)
    job = Job.objects.select_related("batch__owner").order_by("id").first()

    def found(term: str) -> set:
        return {row.pk for row in admin_client.get("/admin/jobs/job/", {"q": term}).context["cl"].result_list}

    assert found(str(job.pk)) == {job.pk}
    assert found(str(job.pk).upper()) == {job.pk}
    assert found(str(job.log_id)) == {job.pk}
    assert found(str(job.batch_id)) == set(Job.objects.filter(batch=job.batch).values_list("pk", flat=True))
    assert found(job.batch.owner.username) == set(Job.objects.filter(batch__owner=job.batch.owner).values_list("pk", flat=True))
    assert found("load-user") == set()  # no partial matches: equality on an index
    assert found(str(job.pk)[:8]) == set()


def test_the_search_never_casts_an_id_column_to_text(admin_client):
    """`=id` in search_fields compared UPPER(id::text): 5.5 s at 1.7M jobs (seq scan)."""
    generate_load(batches=1, jobs=5, users=1)
    job = Job.objects.first()
    seen: list[str] = []

    def capture(execute, sql, *args):
        seen.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(capture):
        admin_client.get("/admin/jobs/job/", {"q": str(job.pk)})
        admin_client.get("/admin/batches/batch/", {"q": str(job.batch_id)})
    assert seen and not [sql for sql in seen if "UPPER(" in sql.upper()]


def test_the_job_page_shows_the_log_tail_and_links_the_whole_log(admin_client, settings, tmp_path):
    settings.BATCHES_LOG_DIR = tmp_path
    generate_load(batches=1, jobs=1, users=1)
    job = Job.objects.get()
    lines = [f"line {n}" for n in range(5000)]
    log_path(job.log_id).write_text("\n".join(lines) + "\n")
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert "line 4999" in page and "line 10\n" not in page  # the tail only
    assert f"/admin/jobs/job/{job.pk}/log/" in page
    whole = admin_client.get(f"/admin/jobs/job/{job.pk}/log/")
    assert whole["Content-Type"].startswith("text/plain")
    assert b"".join(whole.streaming_content).decode().splitlines() == lines


def test_the_whole_log_is_for_staff_who_may_view_jobs(settings, tmp_path, root):
    settings.BATCHES_LOG_DIR = tmp_path
    generate_load(batches=1, jobs=1, users=1)
    job = Job.objects.get()
    log_path(job.log_id).write_text("secret output\n")
    user = User.objects.create_user("someone", is_staff=True)  # staff, but no permission on jobs
    client = Client()
    client.force_login(user)
    assert client.get(f"/admin/jobs/job/{job.pk}/log/").status_code == 404
    client.force_login(User.objects.create_user("plain"))
    assert client.get(f"/admin/jobs/job/{job.pk}/log/").status_code == 302  # to the login page


@pytest.mark.parametrize(
    "url",
    [
        "/admin/jobs/job/?batch__owner__id=abc",
        "/admin/jobs/job/?batch__owner__id=99999999999999999999",
        "/admin/batches/batch/?owner__id__exact=abc",
        "/admin/jobs/job/?create_time__year=99999",
        "/admin/jobs/attempt/?create_time__year=99999",
    ],
)
def test_a_filter_value_the_database_cannot_take_is_the_admins_bad_filter_answer(admin_client, url):
    """These were 500s (a ValueError or OverflowError met when the query was built)."""
    generate_load(batches=1, jobs=3, users=1)
    response = admin_client.get(url)
    assert response.status_code == 302 and response["Location"].endswith("?e=1")


def test_generate_loads_tools_pass_the_catalog_check_and_its_sizes_are_bounded(alice_client, settings):
    """Its tools were written past the catalog's check (`GET /tools` was then 500 for
    every user: KeyError 'required'); --users had no bound (100,000,000 made users for
    minutes) and one batch could hold more jobs than a submission may."""
    generate_load(batches=1, jobs=3, users=1)
    response = alice_client.get("/tools")
    assert response.status_code == 200
    assert {"load-align", "load-render", "load-simulate"} <= {tool["tool_name"] for tool in response.json()}
    with pytest.raises(ValueError, match="users"):
        generate_load(batches=1, jobs=1, users=100_000_000)
    settings.BATCHES_MAX_JOBS_PER_BATCH = 10
    with pytest.raises(ValueError, match="10 jobs per batch"):
        generate_load(batches=1, jobs=11, users=1)


def test_the_job_list_sorts_only_on_indexed_columns(admin_client):
    """Sorting a million jobs by status, reason, tool, attempts or worker took 1-2.5 s
    (a sort of the whole table); those headers do not sort, and a hand-made ?o= for
    them keeps the newest-first order."""
    generate_load(batches=1, jobs=5, users=1)
    for column in range(2, 9):
        cl = admin_client.get(f"/admin/jobs/job/?o={column}").context["cl"]
        ordering = list(cl.queryset.query.order_by)
        assert not any(field.lstrip("-") in ("status", "reason", "attempts", "worker", "batch__tool__name") for field in ordering), (
            column,
            ordering,
        )
    cl = admin_client.get("/admin/jobs/job/?o=1").context["cl"]
    assert list(cl.queryset.query.order_by)[0].lstrip("-") == "id"
