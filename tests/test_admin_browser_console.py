"""The operators' console smoothed (issue 21, "Admin"), in Chromium at 1,366 px: the
dashboard refreshes itself and shows the last minutes; the job list and the attempts
table read one line a row without scrolling sideways; Cancel and Retry are buttons on a
batch's and a job's page; an active worker's page; the login lockouts on the home page.
The same browser, fixtures and skips as tests/test_admin_browser.py."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Attempt, Job, Worker
from jobs.statuses import CANCELLED_REASON, Status
from jobs.transitions import transition
from tests.test_admin_browser import (  # noqa: F401 (fixtures)
    _PROBLEM,
    SCREENSHOTS,
    WIDTH,
    browser,
    chief,
    expect,
    log_in,
    page,
    reasons,
    rows,
    viewer,
)
from tests.worker_helpers import make_batch

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""),
]

LONG_REASON = "attempt lost: worker lab-node-17.example.org:4242 stopped renewing its lease (no heartbeat for 95 s)"
WAITING = "Waiting for a worker with 1 free cpu and 256 MiB"


def ended(jobs: list[Job], *, to: str, reason: str = "", seconds: float = 1.234) -> None:
    """Takes `jobs` through the state machine to `to`, each having run `seconds`."""
    ids = [job.pk for job in jobs]
    start = timezone.now() - timedelta(seconds=seconds)
    for source, target in ((Status.SUBMITTED, Status.RUNNABLE), (Status.RUNNABLE, Status.STARTING), (Status.STARTING, Status.RUNNING)):
        transition(job_ids=ids, from_statuses=[source], to_status=target, now=start)
    if to != Status.RUNNING:
        transition(job_ids=ids, from_statuses=[Status.RUNNING], to_status=to, reason=reason, now=start + timedelta(seconds=seconds))


def fits_the_width(page, selector: str) -> bool:  # noqa: F811 (a page, not the fixture)
    """The table shows every column without scrolling sideways."""
    return page.evaluate(f"() => {{ const e = document.querySelector('{selector}'); return e.scrollWidth <= e.clientWidth + 1; }}")


def test_the_dashboard_refreshes_itself_and_shows_throughput_ends_and_failures(page, chief, alice, catalog):  # noqa: F811 (the fixtures imported above)
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(8)], name="halfway")
    jobs = list(Job.objects.filter(batch=batch).order_by("index"))
    ended(jobs[:3], to=Status.SUCCEEDED)
    ended(jobs[3:4], to=Status.FAILED, reason="exit code 3")
    ended(jobs[4:5], to=Status.RUNNING)

    log_in(page, "chief")
    page.goto("/admin/dashboard/")
    note = page.locator("#refresh-note")
    expect_text(note, "This page refreshes itself every 10 s")
    expect_text(page.locator("#throughput"), "4 job(s) ended in the last")
    expect_text(page.locator("#throughput"), "(3 succeeded, 1 failed)")
    row = page.locator("#running-batches tbody tr").first
    expect_text(row, "halfway")
    assert row.locator("td.eta").inner_text().strip() not in ("", "unknown: none ended lately")
    failure = page.locator("#recent-failures tbody tr").first
    expect_text(failure, "exit code 3")
    # It reloads by itself: a mark left on the page is gone within the 10 s and a bit.
    page.evaluate("() => { window.leftHere = true; }")
    page.wait_for_function("() => window.leftHere === undefined", timeout=15_000)
    expect_text(page.locator("#refresh-note"), "This page refreshes itself")
    # Stopped on request; a failure leads to its job.
    page.get_by_role("link", name="stop refreshing").click()
    expect_text(page.locator("#refresh-note"), "Not refreshing")
    page.locator("#recent-failures tbody tr").first.locator("a").first.click()
    expect_text(page.locator(".field-reason .readonly"), "exit code 3")


def expect_text(locator, text: str) -> None:
    expect(locator).to_contain_text(text)


def test_the_job_list_reads_one_line_a_job_at_1366_px(page, chief, alice, bob, catalog):  # noqa: F811 (the fixtures imported above)
    assert WIDTH == 1366
    echo = catalog["tools"]["echo"]
    waiting = make_batch(alice, echo, catalog, [{"args": {"message": str(i)}} for i in range(12)], name="waiting")
    transition(
        job_ids=list(Job.objects.filter(batch=waiting).values_list("pk", flat=True)),
        from_statuses=[Status.SUBMITTED],
        to_status=Status.RUNNABLE,
        reason=WAITING,
    )
    done = make_batch(bob, echo, catalog, [{"args": {"message": str(i)}} for i in range(3)], name="done")
    first, second, third = Job.objects.filter(batch=done).order_by("index")
    ended([first], to=Status.SUCCEEDED, seconds=1.234)
    ended([second], to=Status.FAILED, reason=LONG_REASON, seconds=0.25)
    ended([third], to=Status.RUNNING)

    log_in(page, "chief")
    page.goto("/admin/jobs/job/")
    assert rows(page).count() == 15
    assert fits_the_width(page, "#changelist .results"), "the job list scrolls sideways at 1,366 px"
    heights = {round(box["height"]) for box in (row.bounding_box() for row in rows(page).all())}
    assert max(heights) < 1.5 * min(heights), f"rows of two lines: {heights}"
    for cell in page.locator("#result_list tbody td.field-duration").all():
        assert cell.is_visible() and cell.bounding_box()["x"] + cell.bounding_box()["width"] <= WIDTH
    # Colours per status.
    colours = {
        label: page.locator(f"#result_list .status-badge.status-{label.lower()}").first.evaluate("e => getComputedStyle(e).backgroundColor")
        for label in ("Succeeded", "Failed", "Running", "Runnable")
    }
    assert len(set(colours.values())) == 4, colours
    # The waiting reason said once, then "same as above"; each whole in its tooltip.
    texts = [text.strip() for text in page.locator("#result_list tbody td.field-reason_text").all_inner_texts()]
    assert texts.count(WAITING) == 1 and texts.count("↑ same as above") == 11, texts
    assert reasons(page).count(WAITING) == 12 and LONG_REASON in reasons(page)
    assert page.locator("#result_list td.field-duration").filter(has_text="1.23 s").count() == 1
    assert page.locator("#result_list td.field-duration").filter(has_text="0.250 s").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "job-list-waiting.png"), full_page=True)  # a batch's waiting jobs, one line each


def test_an_operator_cancels_and_retries_from_the_batch_and_job_pages(page, chief, viewer, alice, catalog):  # noqa: F811 (the fixtures imported above)
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(3)], name="three")
    log_in(page, "viewer")
    page.goto(f"/admin/batches/batch/{batch.pk}/change/")
    expect_text(page.locator(".field-counts"), "submitted 3")
    assert page.get_by_role("button", name="Cancel").count() == 0  # a view-only operator has no buttons
    page.locator("#logout-form button").click()

    log_in(page, "chief")
    page.goto(f"/admin/batches/batch/{batch.pk}/change/")
    assert page.get_by_role("button", name="Retry failed jobs").is_disabled()
    page.get_by_role("button", name="Cancel").click()
    expect_text(page.locator(".messagelist"), "Cancelling 1 batch(es): 3 queued job(s), 0 running one(s) once they stop.")
    expect_text(page.locator(".field-counts"), "failed 3")
    expect(page.locator("#failure-reasons td.failure-count")).to_have_text(["3"])
    expect(page.locator("#failure-reasons td.failure-reason")).to_have_text([CANCELLED_REASON])
    assert page.get_by_role("button", name="Cancel").is_disabled()
    page.get_by_role("button", name="Retry failed jobs").click()
    expect_text(page.locator(".messagelist"), "Retried 3 job(s).")
    expect_text(page.locator(".field-counts"), "runnable 3")
    # One job, from its own page.
    job = Job.objects.filter(batch=batch).order_by("index").first()
    page.goto(f"/admin/jobs/job/{job.pk}/change/")
    page.get_by_role("button", name="Cancel").click()
    expect_text(page.locator(".messagelist"), "Cancelled 1 job(s); 0 of them stop once their attempt has.")
    expect_text(page.locator(".field-status .readonly"), "Failed")
    page.get_by_role("button", name="Retry").click()
    expect_text(page.locator(".messagelist"), "Retried 1 job(s).")
    assert sorted(Job.objects.filter(batch=batch).values_list("status", flat=True)) == ["RUNNABLE"] * 3


def test_the_attempts_table_fits_1366_px_and_a_workers_page_reads_plainly(page, chief, alice, catalog):  # noqa: F811 (the fixtures imported above)
    worker = Worker.objects.create(
        name="lab-node-17.example.org:4242",
        node="lab-node-17.example.org",
        cpus=8,
        memory_mib=32768,
        lease_expires=timezone.now() + timedelta(minutes=5),
        isolation={"job_user": True, "sandbox": True, "cgroup_memory": True, "cgroup_pids": False},
    )
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(4)])
    now = timezone.now()
    for number, job in enumerate(Job.objects.filter(batch=batch), start=1):
        Attempt.objects.create(
            job=job,
            number=1,
            executor="slurm",
            worker=worker,
            node=worker.node,
            external_id=f"1234567{number}_{number}",
            state="ENDED",
            start_time=now,
            end_time=now + timedelta(milliseconds=120 * number),
            exit_code=None,
            reason=LONG_REASON,
        )
    log_in(page, "chief")
    page.goto("/admin/jobs/attempt/")
    expect(page.locator("h1")).to_have_text("Attempts")
    assert rows(page).count() == 4
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "attempts-1366.png"), full_page=True)  # a cluster's long ids and reasons
    assert fits_the_width(page, "#changelist .results"), "the attempts table scrolls sideways at 1,366 px"
    reason = page.locator("#result_list td.field-reason_text .clipped").first
    assert reason.get_attribute("title") == LONG_REASON
    box = reason.bounding_box()
    assert box["x"] + box["width"] <= WIDTH
    job_cell = page.locator("#result_list td.field-job_short a").first
    assert job_cell.inner_text().startswith("…") and len(job_cell.inner_text()) == 13
    heights = {round(row.bounding_box()["height"]) for row in rows(page).all()}
    assert max(heights) < 1.5 * min(heights), heights
    # The worker's page: readable isolation, no Delete while it is active.
    page.locator("#result_list td.field-worker_name a").first.click()
    expect(page.locator(".field-isolation_parts .readonly")).to_contain_text("cgroup_pids: not in force")
    expect(page.locator(".field-isolation_parts .isolation-part")).to_have_count(4)
    expect(page.get_by_role("link", name="Delete")).to_have_count(0)
    # The home page: the login lockouts as one entry.
    page.goto("/admin/")
    expect(page.locator("#content-main")).to_contain_text("Login lockouts")
    expect(page.locator("#content-main").get_by_role("link", name="Access attempts")).to_have_count(1)
    expect(page.locator("#content-main").get_by_role("link", name="Access logs")).to_have_count(0)
    expect(page.locator("#content-main").get_by_role("link", name="Access failure logs")).to_have_count(0)
    page.screenshot(path=str(SCREENSHOTS / "home.png"), full_page=True)
