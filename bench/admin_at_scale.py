"""Benchmark: every admin page an operator uses, in a database of many jobs.

    .venv/bin/python bench/admin_at_scale.py [--repeat 7] [--jobs 500000] [--batches 500]
    .venv/bin/python bench/admin_at_scale.py --jobs 1000000 --batches 1000   # issue 10's database

On the bench database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench;
emptied first, filled with `manage.py generate_load --batches B --jobs N`, then
VACUUM ANALYZE), with the deployment's settings. Logs in as a superuser through the
whole Django stack in this process (sessions, the admin, templates; no network) and
prints, per page, the p50 and p99 of `--repeat` calls and the SQL statements, each page
interleaved with its baseline, a bare Django view (/healthz): baseline, page, baseline,
page... The changelists, their filters and searches, a deep page, the change pages of a
batch, a job, an attempt and a worker, and the dashboard. Target (issue 10): every page
under 300 ms on this machine. The machine is shared: read medians.
"""

import argparse
import os
import statistics
import time

import harness

TARGET_MS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=500_000, help="jobs in the database (1,000,000 in issue 10)")
    parser.add_argument("--batches", type=int, default=500)
    options = parser.parse_args()
    harness.prepare_environment()
    harness.setup_django()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from batches.models import Batch, Tool
    from jobs.models import Attempt, Job, Worker

    setup_test_environment()  # the test client's ALLOWED_HOSTS
    harness.fresh_database()
    started = time.perf_counter()
    call_command("generate_load", "--batches", str(options.batches), "--jobs", str(options.jobs), stdout=open(os.devnull, "w"))  # noqa: SIM115
    filled = time.perf_counter() - started
    harness.vacuum_analyze()
    total = Job.objects.order_by().count()
    admin, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(admin)

    newest = Job.objects.order_by("-id").values_list("id", "batch_id", "log_id")[0]
    failed = Job.objects.filter(status="FAILED").order_by("-id").values_list("id", flat=True)[0]
    batch = Batch.objects.order_by("-n_jobs", "id")[0]
    owner = User.objects.filter(username__startswith="load-user-").order_by("username")[0]
    tool = Tool.objects.filter(name__startswith="load-").order_by("name")[0]
    worker = Worker.objects.filter(name__startswith="load-worker-").order_by("name")[0]
    attempt = Attempt.objects.order_by("-id").values_list("id", flat=True)[0]
    deep = max(1, min(5000, total // 100 // 2))  # a deep page that exists (100 rows a page)
    pages = [
        ("dashboard", "/admin/dashboard/"),
        ("batches", "/admin/batches/batch/"),
        ("batches of one owner", f"/admin/batches/batch/?owner__id__exact={owner.pk}"),
        ("batches of one tool", f"/admin/batches/batch/?tool__id__exact={tool.pk}"),
        ("batches, search owner", f"/admin/batches/batch/?q={owner.username}"),
        ("batches, search name", "/admin/batches/batch/?q=load+17"),
        ("batch page", f"/admin/batches/batch/{batch.pk}/change/"),
        ("jobs", "/admin/jobs/job/"),
        (f"jobs, page {deep}", f"/admin/jobs/job/?p={deep}"),
        ("jobs FAILED", "/admin/jobs/job/?status__exact=FAILED"),
        ("jobs FAILED of one owner", f"/admin/jobs/job/?status__exact=FAILED&batch__owner__id={owner.pk}"),
        ("jobs of one tool", f"/admin/jobs/job/?batch__tool__id__exact={tool.pk}"),
        ("jobs of one worker", f"/admin/jobs/job/?worker__id__exact={worker.pk}"),
        ("jobs created today", "/admin/jobs/job/?batch__create_time__gte=" + time.strftime("%Y-%m-%d+00:00:00%%2B00:00")),
        ("jobs, search job id", f"/admin/jobs/job/?q={newest[0]}"),
        ("jobs, search batch id", f"/admin/jobs/job/?q={newest[1]}"),
        ("jobs, search log id", f"/admin/jobs/job/?q={newest[2]}"),
        ("jobs, search owner", f"/admin/jobs/job/?q={owner.username}"),
        ("job page (failed)", f"/admin/jobs/job/{failed}/change/"),
        ("attempts", "/admin/jobs/attempt/"),
        ("attempts, search executor id", "/admin/jobs/attempt/?q=12345"),  # no index: pids repeat across nodes
        ("attempt page", f"/admin/jobs/attempt/{attempt}/change/"),
        ("workers", "/admin/jobs/worker/"),
        ("worker page", f"/admin/jobs/worker/{worker.pk}/change/"),
        ("tokens", "/admin/accounts/apitoken/"),
        ("tools", "/admin/batches/tool/"),
        ("filesystems", "/admin/batches/filesystem/"),
    ]
    harness.print_config(
        "admin_at_scale: the admin's pages against a bare Django view",
        data=f"{total:,} jobs, {Batch.objects.count():,} batches (generate_load, {filled:.0f} s)",
        rounds=f"{options.repeat} per page, interleaved with /healthz (baseline, page, ...)",
        isolation="n/a (no job runs)",
        slots="n/a (no worker)",
        vacuumed="VACUUM ANALYZE after filling",
    )

    def get(url: str):
        def call() -> float:
            elapsed, response = harness.timed(lambda: client.get(url))
            if response.status_code != 200:
                raise SystemExit(f"{url}: {response.status_code}")
            return elapsed

        return call

    print(f"results (target {TARGET_MS} ms per page):")
    over = 0
    for label, url in pages:
        queries: list[str] = []

        def count(execute, sql, *args, queries=queries):
            queries.append(sql)
            return execute(sql, *args)

        with connection.execute_wrapper(count):
            get(url)()
        bare, times = harness.interleave(options.repeat, get("/healthz"), get(url))
        ms = statistics.median(times) * 1000
        verdict = "ok" if ms < TARGET_MS else "OVER"
        over += verdict == "OVER"
        harness.compare(label, bare, times, p99=True, baseline_label="/healthz", target=f"{len(queries):3d} queries  {verdict}")
    print(f"   {len(pages) - over} of {len(pages)} pages under {TARGET_MS} ms")
    harness.fresh_database()  # leave the bench database small


if __name__ == "__main__":
    main()
