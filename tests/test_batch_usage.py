"""GET /batches/<id>/usage: what a batch's ended attempts used, as seff reports it. Its
figures must equal what the attempt rows add up to, computed here in Python; it costs
the same queries whatever the batch's size; another user's batch is 404."""

import statistics

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.executors.base import Outcome
from jobs.executors.usage import Usage
from jobs.models import Attempt, Job
from tests.conftest import submission
from tests.test_api_contract import run_attempts

pytestmark = pytest.mark.django_db

# (job index, outcomes as (succeeded, reason_code, rss MiB, cpu s, elapsed s)); None: not measured.
RUNS = [
    [(True, "succeeded", 300.5, 2.01, 2.1)],
    [(False, "out_of_memory", 255.9, 0.4, 0.6), (True, "succeeded", 410.0, 1.5, 3.25)],
    [(False, "exit_code", 12.3, 0.02, 0.051)],
    [(False, "worker_lost", None, None, None)],
    [(True, "succeeded", 100.0, 3.9, 2.0)],
]


def make(alice_client, catalog, runs=RUNS) -> str:
    jobs = [{"args": {"message": str(i)}} for i in range(len(runs) + 1)]  # the last one never runs
    batch_id = alice_client.post("/batches", submission(catalog, jobs=jobs, cpu=2, memory=512), format="json").json()["batch_id"]
    ids = list(Job.objects.filter(batch_id=batch_id).order_by("index").values_list("pk", flat=True))
    for job_id, outcomes in zip(ids, runs, strict=False):
        run_attempts(
            job_id,
            [
                Outcome(str(job_id), n, succeeded=ok, reason_code=code, exit_code=0 if ok else 1, usage=Usage(rss, cpu, elapsed))
                for n, (ok, code, rss, cpu, elapsed) in enumerate(outcomes, 1)
            ],
        )
    return batch_id


def test_the_figures_are_what_the_attempts_add_up_to(alice_client, catalog):
    batch_id = make(alice_client, catalog)
    Attempt.objects.filter(job__batch_id=batch_id).update(cpus=2)  # as claimed (run_attempts opens them with 1)
    response = alice_client.get(f"/batches/{batch_id}/usage")
    assert response.status_code == 200
    usage = response.json()
    rows = list(Attempt.objects.filter(job__batch_id=batch_id, end_time__isnull=False).values())
    measured = [r for r in rows if r["cpu_seconds"] is not None]
    rss = sorted(r["max_rss_mib"] for r in rows if r["max_rss_mib"] is not None)
    elapsed = sorted(r["elapsed_seconds"] for r in rows if r["elapsed_seconds"] is not None)
    assert usage["batch_id"] == batch_id
    # The job whose worker was lost is back in line (infrastructure: requeued), its attempt counted.
    assert Job.objects.filter(batch_id=batch_id, status="RUNNABLE").count() == 1
    assert (usage["jobs_ended"], usage["attempts"], usage["cpus"], usage["memory_mib"]) == (4, 6, 2, 512)
    assert usage["cpu_seconds"] == pytest.approx(sum(r["cpu_seconds"] for r in measured), abs=1e-3)
    busy = sum(r["elapsed_seconds"] * r["cpus"] for r in measured)
    assert usage["cpu_efficiency"] == pytest.approx(sum(r["cpu_seconds"] for r in measured) / busy, abs=1e-4)
    assert usage["max_rss_mib"] == {"peak": max(rss), "median": statistics.median(rss)}
    shares = [r["max_rss_mib"] / r["memory_mib"] for r in rows if r["max_rss_mib"] is not None]
    assert usage["memory_efficiency"] == pytest.approx(sum(shares) / len(shares), abs=1e-4)
    assert usage["elapsed_seconds"] == {
        "min": min(elapsed),
        "median": pytest.approx(statistics.median(elapsed), abs=1e-3),
        "max": max(elapsed),
        "total": pytest.approx(sum(elapsed), abs=1e-3),
    }
    assert usage["reason_codes"] == {"succeeded": 3, "out_of_memory": 1, "exit_code": 1, "worker_lost": 1}
    # The figures as numbers: 7.83 cpu-s over (2.1 + 0.6 + 3.25 + 0.051 + 2.0) s x 2 cores.
    assert usage["cpu_seconds"] == 7.83 and usage["cpu_efficiency"] == pytest.approx(7.83 / 16.002, abs=1e-4)
    assert usage["max_rss_mib"] == {"peak": 410.0, "median": 255.9}


def test_a_batch_with_nothing_ended_has_null_figures(alice_client, bob_client, catalog):
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    usage = alice_client.get(f"/batches/{batch_id}/usage").json()
    assert (usage["attempts"], usage["cpu_seconds"], usage["cpu_efficiency"], usage["memory_efficiency"]) == (0, None, None, None)
    assert usage["max_rss_mib"] == {"peak": None, "median": None}
    assert usage["elapsed_seconds"] == {"min": None, "median": None, "max": None, "total": None}
    assert usage["reason_codes"] == {}
    assert bob_client.get(f"/batches/{batch_id}/usage").status_code == 404
    assert alice_client.get("/batches/00000000-0000-0000-0000-000000000000/usage").status_code == 404


def test_its_cost_does_not_grow_with_the_batch(alice_client, catalog):
    small = make(alice_client, catalog, RUNS[:1])
    big = make(alice_client, catalog, RUNS * 8)
    alice_client.get(f"/batches/{small}/usage")

    def queries(batch_id: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert alice_client.get(f"/batches/{batch_id}/usage").status_code == 200
        return len(captured.captured_queries)

    # 1 token, 2 the batch (owner check), 3 the aggregates (PostgreSQL: the medians too), 4
    # the reason codes, 5 the jobs ended; elsewhere 6-7 the two medians.
    assert queries(small) == queries(big) == (5 if connection.vendor == "postgresql" else 7)
    # An even count: the median is the mean of the two middle values, as statistics says.
    rss = [r for r in Attempt.objects.filter(job__batch_id=big).values_list("max_rss_mib", flat=True) if r is not None]
    assert len(rss) % 2 == 0
    assert alice_client.get(f"/batches/{big}/usage").json()["max_rss_mib"]["median"] == pytest.approx(statistics.median(rss))


def test_batches_usage_prints_the_report_as_seff_does(alice_client, catalog):
    from client.usage import usage_lines

    batch_id = make(alice_client, catalog)
    lines = usage_lines(alice_client.get(f"/batches/{batch_id}/usage").json())
    assert lines[0] == f"Batch: {batch_id}"
    assert "Jobs ended: 4 (6 attempt(s) ended)" in lines
    assert "CPU used: 7.830 s" in lines
    assert "Max RSS: peak 410.0 MiB, median 255.9 MiB" in lines
    assert lines[-1] == "Ended as: succeeded 3, exit_code 1, out_of_memory 1, worker_lost 1"
