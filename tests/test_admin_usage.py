"""What attempts used, in the operators' admin (issue 20): a batch's page shows the figures
of GET /batches/<id>/usage (jobs.usage_report.batch_usage); the job list shows what each
job's last ended attempt used beside its attempts, and the attempts list what each one
used, without a query per row. Their 1,366 px layout is checked in a browser
(tests/test_admin_browser_usage.py)."""

import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from batches.models import Batch
from core.admin_pages import to_the_millisecond
from jobs.attempt_admin import used_text
from jobs.models import Attempt
from jobs.usage_report import batch_usage
from tests.conftest import submission
from tests.test_batch_usage import RUNS, make

pytestmark = pytest.mark.django_db


def usage_cells(page: str) -> dict[str, str]:
    """The batch page's usage table, row name -> its text."""
    table = re.search(r'<table id="batch-usage">(.*?)</table>', page, re.S)
    assert table, "no usage table on the batch page"
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(r'<th scope="row">(.*?)</th><td class="[^"]*">(.*?)</td>', table[1])}


def test_the_batch_page_shows_the_figures_of_its_usage_report(admin_client, alice_client, catalog):
    batch_id = make(alice_client, catalog)
    Attempt.objects.filter(job__batch_id=batch_id).update(cpus=2)  # as claimed (run_attempts opens them with 1)
    report = batch_usage(batch=Batch.objects.get(pk=batch_id))
    assert {**report, "batch_id": str(batch_id)} == alice_client.get(f"/batches/{batch_id}/usage").json()  # the route's figures
    cells = usage_cells(admin_client.get(f"/admin/batches/batch/{batch_id}/change/").content.decode())
    rss, elapsed = report["max_rss_mib"], report["elapsed_seconds"]
    assert cells == {
        "jobs ended": f"{report['jobs_ended']} ({report['attempts']} attempt(s) ended)",
        "asked per job": f"{report['cpus']} core(s), {report['memory_mib']} MiB",
        "cpu used": f"{report['cpu_seconds']:.3f} s",
        "cpu efficiency": f"{report['cpu_efficiency'] * 100:.1f}% of elapsed x cores",
        "max RSS": f"peak {rss['peak']:.1f} MiB, median {rss['median']:.1f} MiB",
        "memory efficiency": f"{report['memory_efficiency'] * 100:.1f}% of the memory asked (mean)",
        "elapsed": f"min {elapsed['min']:.3f} s, median {elapsed['median']:.3f} s, max {elapsed['max']:.3f} s, total {elapsed['total']:.3f} s",
        "ended as": "succeeded 3, exit_code 1, out_of_memory 1, worker_lost 1",
    }
    # The same figures as numbers (tests/test_batch_usage.py adds them up from the rows).
    assert cells["cpu used"] == "7.830 s" and cells["max RSS"] == "peak 410.0 MiB, median 255.9 MiB"
    assert cells["jobs ended"] == "4 (6 attempt(s) ended)" and cells["asked per job"] == "2 core(s), 512 MiB"


def test_a_batch_with_no_ended_attempt_says_so(admin_client, alice_client, catalog):
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    page = admin_client.get(f"/admin/batches/batch/{batch_id}/change/").content.decode()
    assert "nothing measured yet: no attempt of this batch has ended" in page
    assert 'id="batch-usage"' not in page


def cells(page: str, column: str) -> list[str]:
    found = re.findall(rf'<td class="field-{column}">(.*?)</td>', page, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for text in found]


def test_the_job_list_shows_what_each_jobs_last_ended_attempt_used(admin_client, alice_client, catalog):
    batch_id = make(alice_client, catalog)
    page = admin_client.get("/admin/jobs/job/", {"batch__id__exact": batch_id}).content.decode()
    assert sorted(cells(page, "attempts_used")) == sorted(
        [
            "1 · 2.01 cpu-s, 300 MiB",
            "2 · 1.50 cpu-s, 410 MiB",  # the second attempt's, not the first's
            "1 · 0.02 cpu-s, 12 MiB",
            "1 · -",  # the worker was lost: nothing measured (and the job waits again)
            "1 · 3.90 cpu-s, 100 MiB",
            "0",  # never ran
        ]
    )
    # The exact figures, and what the attempt had, in the tooltip.
    assert 'title="attempt 2: cpu 1.500 s on 1 core(s); peak 410 MiB of 256 MiB; elapsed 3.250 s"' in page


def test_the_job_list_reads_the_attempts_in_one_query_whatever_its_rows(admin_client, alice_client, catalog):
    def queries(batch_id: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/jobs/job/", {"batch__id__exact": batch_id}).status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    small = make(alice_client, catalog, RUNS[:1])
    big = make(alice_client, catalog, RUNS * 8)
    queries(small)
    few, many = queries(small), queries(big)
    assert len(few) == len(many), many
    assert sum('FROM "jobs_attempt"' in sql for sql in many) == 1, many


def test_the_attempts_list_shows_what_each_attempt_used(admin_client, alice_client, catalog):
    batch_id = make(alice_client, catalog)
    page = admin_client.get("/admin/jobs/attempt/").content.decode()
    assert sorted(cells(page, "used")) == sorted(
        ["3.90 cpu-s, 100 MiB", "-", "0.02 cpu-s, 12 MiB", "1.50 cpu-s, 410 MiB", "0.40 cpu-s, 256 MiB", "2.01 cpu-s, 300 MiB"]
    )
    assert Attempt.objects.filter(job__batch_id=batch_id).count() == 6
    # Ended: in the tooltip of how long it took (the list had no room for its column).
    attempt = Attempt.objects.get(job__batch_id=batch_id, number=2)
    assert f'<span title="ended {to_the_millisecond(attempt.end_time)}">' in page


@pytest.mark.parametrize(
    ("cpu", "rss", "text"),
    [
        (0.004, 0.4, "0.00 cpu-s, 0.4 MiB"),
        (20.25, 1023.4, "20.2 cpu-s, 1023 MiB"),
        (9_999.4, 1_024.0, "9,999 cpu-s, 1.0 GiB"),
        (36_000.0, 102_400.0, "10.0 cpu-h, 100 GiB"),
        (None, 300.0, "- cpu-s, 300 MiB"),
    ],
)
def test_a_used_figure_is_at_most_five_characters_and_its_unit(cpu, rss, text):
    attempt = Attempt(number=1, cpu_seconds=cpu, max_rss_mib=rss, memory_mib=2048, cpus=1)
    assert re.sub(r"<[^>]+>", "", used_text(attempt)) == text
    assert used_text(None) == used_text(Attempt(number=1)) == "-"
