"""Benchmark: the API's routes in a PostgreSQL database of many jobs, each against its
bare query, in one run.

    .venv/bin/python bench/api_at_scale.py [--repeat 9] [--big-jobs 1000000] [--batches 300] [--submit-jobs 50000]
    .venv/bin/python bench/api_at_scale.py --big-jobs 1000000 --batches 700 --submit-jobs 100000   # the normal case (1.7M jobs)

On the bench database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench;
emptied first) with the deployment's settings: batchsite.settings, whose throttles count
in the database cache table (`createcachetable`), as a deployment's do. Fills it in SQL:
one user with a `--big-jobs` batch, `--batches` batches of 1,000 jobs and 300 of one job
(jobs in every state), then VACUUM ANALYZE. Then, through the whole Django stack in this
process (authentication, throttling, views, serializers; no network), each figure
interleaved with its baseline `--repeat` times (baseline first):
- a bare Django view (`GET /healthz`), then an authenticated DRF view that does nothing
  (token look-up, throttle, DRF): the fixed cost of any authenticated request here;
- GET /batches/<id> (status counts) on a 1,000-job and on the big batch, against the
  bare `GROUP BY status`;
- GET /batches/<id>/jobs/<id> (job detail) against the bare row;
- GET /batches?limit=1000 and a 1,000-job page of GET /batches/<id>/jobs, against the
  bare pages;
- POST /batches with `--submit-jobs` jobs against COPY of the same rows.
Targets (issue 9): reads within 5x their bare query plus the fixed cost; counts within
1.5x (plus the fixed cost); the 100k POST within 2x COPY and under 30 s. p50 and p99 are
printed; the machine is shared: read medians and ratios.
"""

import argparse
import json
import statistics
import time

import harness

STATES = ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", "RUNNABLE", "RUNNING", "SUBMITTED"]
urlpatterns: list = []  # the service's routes and a no-op one (for the fixed cost); set in main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--big-jobs", type=int, default=1_000_000, help="jobs of the big batch (1,000,000 in the normal case)")
    parser.add_argument("--batches", type=int, default=300, help="batches of 1,000 jobs (700 in the normal case)")
    parser.add_argument("--submit-jobs", type=int, default=50_000, help="jobs per POST (100,000: the normal case)")
    options = parser.parse_args()

    harness.prepare_environment()
    harness.setup_django()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test.utils import setup_test_environment
    from django.urls import clear_url_caches, path
    from rest_framework.response import Response
    from rest_framework.test import APIClient
    from rest_framework.views import APIView

    from accounts.services import issue_token
    from batches.catalog import sync_catalog
    from batches.models import Batch, Filesystem, Tool
    from batchsite import urls as service_urls
    from core.ids import uuid7

    class _Noop(APIView):
        def get(self, request):
            return Response({})

    urlpatterns[:] = [path("bench-noop", _Noop.as_view()), *service_urls.urlpatterns]

    setup_test_environment()  # the test client's host name
    harness.fresh_database()
    repeat = options.repeat

    def sql(query: str, params: list | None = None) -> list:
        with connection.cursor() as cursor:
            cursor.execute(query, params or [])
            return cursor.fetchall() if cursor.description else []

    sync_catalog(
        data={
            "tools": [{"name": "echo", "command": ["/bin/echo", "{message}"], "parameters": {"message": {"type": "string"}}}],
            "filesystems": [{"name": "scratch", "path": "/tmp/batches-bench-scratch", "public": True}],
        }
    )
    tool, fs = Tool.objects.get(name="echo"), Filesystem.objects.get(name="scratch")
    user = User.objects.create_user("bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user=user)[1]}")

    # The jobs, in SQL (the service's own insert is what is measured, not this).
    started = time.perf_counter()

    def batch(n_jobs: int) -> Batch:
        created = Batch.objects.create(owner=user, tool=tool, command=tool.command, cpu=1, memory=64, n_jobs=n_jobs, timeout_seconds=60)
        created.filesystems.add(fs)
        return created

    big = batch(options.big_jobs)
    small = [batch(1000) for _ in range(options.batches)]
    tiny = [batch(1) for _ in range(300)]
    insert = (
        'INSERT INTO jobs_job (id, batch_id, "index", args, log_id, status, reason, attempts, create_time, charged_attempts) '
        "SELECT gen_random_uuid(), %s, g, jsonb_build_object('message', 'message ' || g), gen_random_uuid(), "
        "(%s::text[])[1 + (g %% cardinality(%s::text[]))], '', 1, now(), 0 FROM generate_series(0, %s) AS g"
    )
    sql(insert, [big.pk, STATES, STATES, options.big_jobs - 1])
    for each in small:
        sql(insert, [each.pk, STATES, STATES, 999])
    for each in tiny:
        sql(insert, [each.pk, STATES, STATES, 0])
    filled = time.perf_counter() - started
    harness.vacuum_analyze()
    total = sql("SELECT count(*) FROM jobs_job")[0][0]
    small = small[len(small) // 2]
    harness.print_config(
        "api_at_scale: API routes against their bare queries",
        data=f"{total:,} jobs: one batch of {options.big_jobs:,}, {options.batches} of 1,000, 300 of 1 (filled in {filled:.0f} s)",
        batch_size=f"POST /batches of {options.submit_jobs:,} jobs",
        rounds=f"{repeat} per figure (x10 for the fixed costs), interleaved: baseline, measured, ...",
        isolation="n/a (no job runs)",
        slots="n/a (no worker)",
        throttle=f"{settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]} ({settings.CACHES['default'].get('LOCATION', '')}), "
        f"user rate {settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['user']} (batchsite.settings)",
        vacuumed="VACUUM ANALYZE after filling",
    )

    def get(url: str):
        def call() -> float:
            elapsed, response = harness.timed(lambda: client.get(url))
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
            return elapsed

        return call

    def bare(queries: list[tuple[str, list]]):
        return lambda: harness.timed(lambda: [sql(query, params) for query, params in queries])[0]

    print("results (baseline first in each pair):")
    get("/healthz")()
    settings.ROOT_URLCONF = __name__
    clear_url_caches()
    get("/bench-noop")()  # warm
    # What every authenticated request pays before its own work: the middleware, the
    # token's look-up, the throttle (a database cache round trip), DRF's request and
    # response; against a bare Django view.
    healthz, noop = harness.interleave(repeat * 10, get("/healthz"), get("/bench-noop"))
    harness.compare("authenticated no-op DRF view", healthz, noop, p99=True, baseline_label="GET /healthz")
    fixed = statistics.median(noop) * 1000
    # The bare side: the queries a hand-written handler would run for the same answer
    # (the batch or job looked up within the user's, the counts, the filesystems...),
    # in raw SQL; authentication is in the fixed cost.
    batch_sql = (
        "SELECT b.*, t.name, t.description FROM batches_batch b JOIN batches_tool t ON t.id = b.tool_id WHERE b.id = %s AND b.owner_id = %s"
    )
    counts_sql = "SELECT status, count(*) FROM jobs_job WHERE batch_id = %s GROUP BY status"
    owned_sql = "SELECT 1 FROM batches_batch WHERE id = %s AND owner_id = %s AND deleted_at IS NULL"
    fs_sql = (
        "SELECT f.id, f.name FROM batches_batch_filesystems bf JOIN batches_filesystem f ON f.id = bf.filesystem_id WHERE bf.batch_id = %s"
    )
    job_sql = "SELECT j.*, b.cpu, b.memory FROM jobs_job j JOIN batches_batch b ON b.id = j.batch_id WHERE j.id = %s AND b.owner_id = %s"
    list_sql = (
        "SELECT b.*, t.name, t.description FROM batches_batch b JOIN batches_tool t ON t.id = b.tool_id"
        " WHERE b.owner_id = %s AND b.deleted_at IS NULL ORDER BY b.id LIMIT 1001"
    )
    list_fs_sql = (
        "SELECT bf.batch_id, f.id, f.name FROM batches_batch_filesystems bf JOIN batches_filesystem f ON f.id = bf.filesystem_id"
        " JOIN batches_batch b ON b.id = bf.batch_id WHERE b.owner_id = %s"
    )
    page_sql = 'SELECT id, "index", log_id, args, status, reason FROM jobs_job WHERE batch_id = %s ORDER BY "index" LIMIT 1001'
    job = sql('SELECT id FROM jobs_job WHERE batch_id = %s ORDER BY "index" LIMIT 1 OFFSET 500', [small.pk])[0][0]
    rows = [
        ("status counts, 1,000-job batch", f"/batches/{small.pk}", [(owned_sql, [small.pk, user.pk]), (counts_sql, [small.pk])], 1.5),
        (
            f"status counts, {options.big_jobs:,}-job batch",
            f"/batches/{big.pk}",
            [(owned_sql, [big.pk, user.pk]), (counts_sql, [big.pk])],
            1.5,
        ),
        ("job detail", f"/batches/{small.pk}/jobs/{job}", [(job_sql, [job, user.pk]), (fs_sql, [small.pk])], 5),
        ("GET /batches?limit=1000", "/batches?limit=1000", [(list_sql, [user.pk]), (list_fs_sql, [user.pk])], 5),
        ("1,000-job page", f"/batches/{big.pk}/jobs?limit=1000", [(batch_sql, [big.pk, user.pk]), (page_sql, [big.pk])], 5),
    ]
    for label, url, queries, factor in rows:
        get(url)()  # warm
        bare_times, api_times = harness.interleave(repeat, bare(queries), get(url))
        bound = factor * statistics.median(bare_times) * 1000 + fixed
        verdict = "ok" if statistics.median(api_times) * 1000 <= bound else "OVER"
        harness.compare(
            label,
            bare_times,
            api_times,
            p99=True,
            baseline_label="bare",
            target=f"target {factor}x bare + fixed = {bound:.1f} ms: {verdict}",
        )

    body = {
        "tool_id": str(tool.pk),
        "hardware": {"cpu": 1, "memory": 64, "filesystem_list": [str(fs.pk)]},
        "jobs": [{"args": {"message": f"message {i}"}} for i in range(options.submit_jobs)],
    }
    columns = 'id, batch_id, "index", args, log_id, status, reason, attempts, create_time, charged_attempts'

    def copy_rows() -> float:
        target = Batch.objects.create(
            owner=user, tool=tool, command=tool.command, cpu=1, memory=64, n_jobs=options.submit_jobs, timeout_seconds=60
        )
        began = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(f"COPY jobs_job ({columns}) FROM STDIN") as copy:
            now = target.create_time
            for i in range(options.submit_jobs):
                copy.write_row((uuid7(), target.pk, i, json.dumps({"message": f"message {i}"}), uuid7(), "SUBMITTED", "", 0, now, 0))
        return time.perf_counter() - began

    def post() -> float:
        elapsed, response = harness.timed(lambda: client.post("/batches", body, format="json"))
        assert response.status_code == 201, response.content[:300]
        return elapsed

    copy_times, post_times = harness.interleave(3, copy_rows, post)
    api, raw = statistics.median(post_times), statistics.median(copy_times)
    verdict = "ok" if api <= 2 * raw and api < 30 else "OVER"
    harness.compare(
        f"POST /batches, {options.submit_jobs:,} jobs",
        copy_times,
        post_times,
        unit="s",
        scale=1,
        baseline_label="COPY",
        target=f"target 2x and < 30 s: {verdict}",
    )
    harness.fresh_database()  # leave the bench database small


if __name__ == "__main__":
    main()
