"""Submission and read throughput against raw SQL, in one run on one database.

    .venv/bin/python bench/bench_submit.py [--jobs 10000] [--repeat 5]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/batches .venv/bin/python bench/bench_submit.py

Creates a throwaway test database (like the test suite), then, `--repeat` times:
- POST /batches with N jobs through the whole stack (auth, validation, bulk insert),
  against the same N rows inserted with one raw executemany() (the floor for any ORM);
- GET /batches/<id> (the status counts) and a 1000-job page of GET /batches/<id>/jobs,
  against the equivalent raw SELECTs.
Prints medians and the ratios (API time / raw time). The machine is shared: read the
ratios, not the absolute numbers.
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from accounts.services import issue_token  # noqa: E402
from batches.catalog import sync_catalog  # noqa: E402
from batches.models import Filesystem, Tool  # noqa: E402
from core.ids import uuid7  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        run(options.jobs, options.repeat)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(n_jobs: int, repeat: int) -> None:
    sync_catalog(
        data={
            "tools": [{"name": "echo", "command": ["/bin/echo", "{message}"], "parameters": {"message": {"type": "string"}}}],
            "filesystems": [{"name": "scratch", "path": "/tmp/batches-bench-scratch", "public": True}],
        }
    )
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

    api_submit, raw_submit, api_status, raw_status, api_page, raw_page = [], [], [], [], [], []
    for _ in range(repeat):
        elapsed, response = timed(lambda: client.post("/batches", body, format="json"))
        assert response.status_code == 201, response.content
        api_submit.append(elapsed)
        batch_id = response.json()["batch_id"]

        raw_batch = uuid7()
        # One transaction, as the API's bulk insert uses.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO batches_batch (id, owner_id, name, tool_id, cpu, memory, n_jobs, max_attempts, timeout_seconds, create_time)"
                " VALUES (%s, %s, '', %s, 1, 64, %s, 1, 3600, CURRENT_TIMESTAMP)",
                [
                    raw_batch.hex if connection.vendor == "sqlite" else raw_batch,
                    user.pk,
                    tool.pk.hex if connection.vendor == "sqlite" else tool.pk,
                    n_jobs,
                ],
            )
            rows = []
            for i in range(n_jobs):
                job_id, log_id = uuid7(), uuid7()
                if connection.vendor == "sqlite":
                    job_id, log_id, batch_ref = job_id.hex, log_id.hex, raw_batch.hex
                else:
                    batch_ref = raw_batch
                rows.append((job_id, batch_ref, i, f'{{"message": "message {i}"}}', log_id))
            elapsed, _ = timed(
                lambda rows=rows, cursor=cursor: cursor.executemany(
                    'INSERT INTO jobs_job (id, batch_id, "index", args, log_id, status, reason, attempts, create_time)'
                    " VALUES (%s, %s, %s, %s, %s, 'SUBMITTED', '', 0, CURRENT_TIMESTAMP)",
                    rows,
                )
            )
            raw_submit.append(elapsed)

        elapsed, response = timed(lambda batch_id=batch_id: client.get(f"/batches/{batch_id}"))
        assert response.status_code == 200
        api_status.append(elapsed)
        elapsed, response = timed(lambda batch_id=batch_id: client.get(f"/batches/{batch_id}/jobs?limit=1000"))
        assert response.status_code == 200 and len(response.json()) == 1000
        api_page.append(elapsed)
        with connection.cursor() as cursor:
            ref = uuid.UUID(batch_id).hex if connection.vendor == "sqlite" else batch_id
            elapsed, _ = timed(
                lambda cursor=cursor, ref=ref: (
                    cursor.execute("SELECT status, COUNT(*) FROM jobs_job WHERE batch_id = %s GROUP BY status", [ref]),
                    cursor.fetchall(),
                )
            )
            raw_status.append(elapsed)
            elapsed, _ = timed(
                lambda cursor=cursor, ref=ref: (
                    cursor.execute(
                        'SELECT id, "index", log_id, args, status FROM jobs_job WHERE batch_id = %s ORDER BY "index" LIMIT 1001', [ref]
                    ),
                    cursor.fetchall(),
                )
            )
            raw_page.append(elapsed)

    def line(label: str, api: list[float], raw: list[float]) -> None:
        a, r = statistics.median(api), statistics.median(raw)
        print(f"{label:<34} api {a * 1000:9.1f} ms   raw SQL {r * 1000:9.1f} ms   ratio {a / r:6.1f}x")

    print(f"database: {connection.vendor}; {n_jobs} jobs per batch; median of {repeat}")
    line(f"submit {n_jobs} jobs (POST /batches)", api_submit, raw_submit)
    print(f"{'':<34} api {n_jobs / statistics.median(api_submit):9.0f} jobs/s")
    line("status counts (GET /batches/<id>)", api_status, raw_status)
    line("1000-job page (GET .../jobs)", api_page, raw_page)


if __name__ == "__main__":
    main()
