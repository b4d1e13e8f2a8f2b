"""What attempts used, in the operators' admin (issue 20): a batch's page shows the figures
of GET /batches/<id>/usage (jobs.usage_report.batch_usage); the job list shows what each
job's last ended attempt used beside its attempts, and the attempts list what each one
used, without a query per row. Their 1,366 px layout is checked in a browser
(tests/test_admin_browser_usage.py)."""

import html
import re

import pytest

from batches.models import Batch
from jobs.models import Attempt
from jobs.usage_report import batch_usage
from tests.conftest import submission
from tests.test_batch_usage import make

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
