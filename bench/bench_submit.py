"""Submission and read throughput against raw SQL, in one run on one PostgreSQL database.

    .venv/bin/python bench/bench_submit.py [--jobs 50000] [--repeat 7]
    .venv/bin/python bench/bench_submit.py --jobs 100000        # the normal case

On the bench database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench;
emptied first), with the deployment's settings, interleaved `--repeat` times
(baseline first, then the service):
- N rows inserted with one raw executemany() (the floor for any ORM), then POST /batches
  with N jobs through the whole stack (auth, throttle, validation, bulk insert);
- the equivalent raw SELECTs, then GET /batches/<id> (the status counts) and a 1000-job
  page of GET /batches/<id>/jobs.
Prints medians and the ratios (API time / raw time). The machine is shared: read the
ratios, not the absolute numbers.
"""

import argparse
import json
import statistics

import harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per batch (100,000: the normal case)")
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args()

    harness.prepare_environment()
    harness.setup_django()
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.test.utils import setup_test_environment
    from rest_framework.test import APIClient

    from accounts.services import issue_token
    from batches.catalog import sync_catalog
    from batches.models import Filesystem, Tool
    from core.ids import uuid7

    setup_test_environment()  # the test client's host name
    harness.fresh_database()
    n_jobs, repeat = options.jobs, options.repeat
    sync_catalog(
        data={
            "tools": [{"name": "echo", "command": ["/bin/echo", "{message}"], "parameters": {"message": {"type": "string"}}}],
            "filesystems": [{"name": "scratch", "path": "/tmp/batches-bench-scratch", "public": True}],
        }
    )
    harness.vacuum_analyze()
    tool = Tool.objects.get(name="echo")
    fs = Filesystem.objects.get(name="scratch")
    user = User.objects.create_user("bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user=user)[1]}")
    body = {
        "tool_id": str(tool.pk),
        "hardware": {"cpu": 1, "memory": 64, "filesystem_list": [str(fs.pk)]},
        "jobs": [{"args": {"message": f"message {i}"}} for i in range(n_jobs)],
    }
    harness.print_config(
        "bench_submit: POST /batches and two reads, against raw SQL",
        batch_size=f"{n_jobs:,} jobs per batch",
        rounds=f"{repeat}, interleaved (raw SQL, then the API)",
        isolation="n/a (no job runs)",
        slots="n/a (no worker)",
        settings="batchsite.settings (database cache for the throttle, 6000/min user rate)",
        vacuumed="VACUUM ANALYZE after the catalog, before the first round; none between rounds (tables grow each round)",
    )

    def raw_insert() -> float:
        # One transaction, as the API's bulk insert uses; every NOT NULL column given.
        raw_batch = uuid7()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO batches_batch (id, owner_id, name, tool_id, command, arg_types, cpu, memory, n_jobs, max_attempts,"
                " timeout_seconds, priority, create_time) VALUES (%s, %s, '', %s, %s, %s, 1, 64, %s, 1, 3600, 0, CURRENT_TIMESTAMP)",
                [raw_batch, user.pk, tool.pk, json.dumps(tool.command), json.dumps({"message": "string"}), n_jobs],
            )
            rows = [(uuid7(), raw_batch, i, f'{{"message": "message {i}"}}', uuid7()) for i in range(n_jobs)]
            elapsed, _ = harness.timed(
                lambda: cursor.executemany(
                    'INSERT INTO jobs_job (id, batch_id, "index", args, log_id, status, reason, attempts, charged_attempts, create_time)'
                    " VALUES (%s, %s, %s, %s, %s, 'SUBMITTED', '', 0, 0, CURRENT_TIMESTAMP)",
                    rows,
                )
            )
        return elapsed

    def raw_query(query: str, batch_id: str) -> float:
        with connection.cursor() as cursor:
            elapsed, _ = harness.timed(lambda: (cursor.execute(query, [batch_id]), cursor.fetchall()))
        return elapsed

    def api(method: str, url: str, expect: int, **kwargs) -> tuple[float, object]:
        elapsed, response = harness.timed(lambda: getattr(client, method)(url, **kwargs))
        assert response.status_code == expect, (url, response.status_code, response.content[:300])
        return elapsed, response

    figures: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ("submit", "status", "page")}
    for number in range(1, repeat + 1):
        figures["submit"][0].append(raw_insert())
        elapsed, response = api("post", "/batches", 201, data=body, format="json")
        figures["submit"][1].append(elapsed)
        batch_id = response.json()["batch_id"]
        figures["status"][0].append(raw_query("SELECT status, COUNT(*) FROM jobs_job WHERE batch_id = %s GROUP BY status", batch_id))
        figures["status"][1].append(api("get", f"/batches/{batch_id}", 200)[0])
        figures["page"][0].append(
            raw_query('SELECT id, "index", log_id, args, status FROM jobs_job WHERE batch_id = %s ORDER BY "index" LIMIT 1001', batch_id)
        )
        elapsed, response = api("get", f"/batches/{batch_id}/jobs?limit=1000", 200)
        assert len(response.json()) == min(1000, n_jobs)
        figures["page"][1].append(elapsed)
        print(f"   round {number}/{repeat}: submit raw {figures['submit'][0][-1]:.3f} s, api {figures['submit'][1][-1]:.3f} s", flush=True)

    print(f"results (medians of {repeat}; baseline = raw SQL):")
    harness.compare(f"submit {n_jobs:,} jobs (POST /batches)", *figures["submit"], baseline_label="raw")
    print(f"   {'':<38} api {n_jobs / statistics.median(figures['submit'][1]):,.0f} jobs/s")
    harness.compare("status counts (GET /batches/<id>)", *figures["status"], baseline_label="raw")
    harness.compare("1000-job page (GET .../jobs)", *figures["page"], baseline_label="raw")


if __name__ == "__main__":
    main()
