"""What attempts used, in the admin in Chromium at 1,366 px (issue 20): the job list's
"attempts · used" column and the attempts list's "used" column keep their tables within
the screen, one line a row, with the widest figures, the longest texts and an attempt
that ran for hours; a batch's page shows its usage table (screenshots under
test-output/screenshots/). The same browser, fixtures and skips as
tests/test_admin_browser.py; the figures themselves are checked in tests/test_admin_usage.py."""

from datetime import timedelta

import pytest
from django.db.models import F

from jobs.executors.base import Outcome
from jobs.executors.usage import Usage
from jobs.models import Attempt, Job, Worker
from jobs.statuses import Status
from tests.test_admin_browser import (  # noqa: F401 (fixtures)
    _PROBLEM,
    SCREENSHOTS,
    WIDTH,
    browser,
    chief,
    expect,
    log_in,
    page,
    rows,
)
from tests.test_admin_browser_console import LONG_REASON, ended, fits_the_width
from tests.test_api_contract import run_attempts
from tests.worker_helpers import make_batch

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""),
]

HOURS = 12 * 3600 + 5 * 60  # "12 h 05 min", the widest duration of an ordinary run


def widest_jobs(alice, catalog) -> list[Job]:
    """Three jobs with the widest cells a list shows: figures of five characters and
    their unit ("9,999 cpu-s, 1023 MiB"), a long reason and worker, one ended after
    hours and one running for as long; and a small one ("2.03 cpu-s, 310 MiB")."""
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(4)], name="widest")
    wide, small, failed, running = Job.objects.filter(batch=batch).order_by("index")
    for job, usage in ((wide, Usage(1023.4, 9_999.4, HOURS)), (small, Usage(309.5, 2.025, 2.1))):
        run_attempts(job.pk, [Outcome(str(job.pk), 1, succeeded=True, reason_code="succeeded", exit_code=0, usage=usage)])
    outcome = Outcome(str(failed.pk), 1, succeeded=False, reason_code="signal", exit_code=None, signal=9, reason=LONG_REASON)
    run_attempts(failed.pk, [outcome])
    for number, worker in enumerate(Worker.objects.order_by("pk"), start=17):  # each run_attempts registered its own
        Worker.objects.filter(pk=worker.pk).update(name=f"lab-node-{number}.example.org:4242")
    Job.objects.filter(pk__in=[wide.pk, small.pk, failed.pk]).update(worker=Worker.objects.first())
    ended([running], to=Status.RUNNING, seconds=HOURS)
    Job.objects.filter(pk=running.pk).update(worker=Worker.objects.first(), reason=LONG_REASON)
    return [wide, small, failed, running]


def test_the_job_list_shows_what_jobs_used_and_still_fits_1366_px(page, chief, alice, catalog):  # noqa: F811 (the fixtures imported above)
    widest_jobs(alice, catalog)
    log_in(page, "chief")
    page.goto("/admin/jobs/job/")
    assert rows(page).count() == 4
    used = page.locator("#result_list td.field-attempts_used")
    expect(used.filter(has_text="9,999 cpu-s, 1023 MiB")).to_have_count(1)
    expect(used.filter(has_text="1 · 2.02 cpu-s, 310 MiB")).to_have_count(1)
    tooltip = used.filter(has_text="2.02 cpu-s").locator(".used").get_attribute("title")
    assert tooltip == "attempt 1: cpu 2.025 s on 1 core(s); peak 309.5 MiB of 256 MiB; elapsed 2.100 s", tooltip
    expect(page.locator("#result_list td.field-duration").filter(has_text="12 h 05 min so far")).to_have_count(1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "job-list-used.png"), full_page=True)
    assert fits_the_width(page, "#changelist .results"), "the job list scrolls sideways at 1,366 px"
    heights = {round(row.bounding_box()["height"]) for row in rows(page).all()}
    assert max(heights) < 1.5 * min(heights), f"rows of two lines: {heights}"
    for cell in page.locator("#result_list tbody td.field-duration").all():
        assert cell.bounding_box()["x"] + cell.bounding_box()["width"] <= WIDTH


def test_the_attempts_list_shows_what_each_used_and_still_fits_1366_px(page, chief, alice, catalog):  # noqa: F811 (the fixtures imported above)
    wide, *_ = widest_jobs(alice, catalog)
    Attempt.objects.filter(reason=LONG_REASON).update(external_id="12345678_1234", node="lab-node-17.example.org")
    # The long run started on another day, whatever the time the test runs (its cell
    # then shows the day: the widest form; CI once ran this just after midnight).
    Attempt.objects.filter(job=wide).update(start_time=F("start_time") - timedelta(days=1), end_time=F("end_time") - timedelta(days=1))
    log_in(page, "chief")
    page.goto("/admin/jobs/attempt/")
    assert rows(page).count() == 3
    used = page.locator("#result_list td.field-used")
    expect(used).to_have_text(["-", "2.02 cpu-s, 310 MiB", "9,999 cpu-s, 1023 MiB"])  # newest first
    expect(page.locator("#result_list td.field-exit_status").filter(has_text="sig 9")).to_have_count(1)
    # When it ended: in the tooltip of how long it took.
    started = page.locator("#result_list td.field-started").filter(has_text=" ").last
    assert started.inner_text().strip()[:3].isalpha(), started.inner_text()  # "Dec 04 12:09:14"
    took = page.locator("#result_list td.field-took").filter(has_text="12 h 05 min").locator("span")
    assert took.get_attribute("title").startswith("ended "), took.get_attribute("title")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "attempts-used.png"), full_page=True)
    assert fits_the_width(page, "#changelist .results"), "the attempts table scrolls sideways at 1,366 px"
    heights = {round(row.bounding_box()["height"]) for row in rows(page).all()}
    assert max(heights) < 1.5 * min(heights), f"rows of two lines: {heights}"
    reason = page.locator("#result_list td.field-reason_text .clipped").first
    assert reason.bounding_box()["x"] + reason.bounding_box()["width"] <= WIDTH


def test_a_batch_page_shows_its_usage(page, chief, alice, catalog):  # noqa: F811 (the fixtures imported above)
    jobs = widest_jobs(alice, catalog)
    Attempt.objects.update(memory_mib=2048)  # (run_attempts gives each 256 MiB)
    log_in(page, "chief")
    page.goto(f"/admin/batches/batch/{jobs[0].batch_id}/change/")
    table = page.locator("#batch-usage")
    expect(table.locator("td.usage-jobs-ended")).to_have_text("3 (3 attempt(s) ended)")
    expect(table.locator("td.usage-cpu-used")).to_have_text("10001.425 s")
    expect(table.locator("td.usage-max-rss")).to_have_text("peak 1023.4 MiB, median 666.5 MiB")
    expect(table.locator("td.usage-ended-as")).to_have_text("succeeded 2, signal 1")
    table.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "batch-usage.png"), full_page=True)
    # A batch with nothing ended says so.
    idle = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "x"}}], name="idle")
    page.goto(f"/admin/batches/batch/{idle.pk}/change/")
    expect(page.locator(".field-usage .readonly")).to_have_text("nothing measured yet: no attempt of this batch has ended")
