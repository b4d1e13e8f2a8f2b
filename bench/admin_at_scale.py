"""Benchmark: every admin page an operator uses, in a database of a million jobs.

    createdb -h 127.0.0.1 -U postgres load
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/load SECRET_KEY=x
    .venv/bin/python manage.py migrate
    .venv/bin/python manage.py generate_load --batches 1000 --jobs 1000000
    .venv/bin/python bench/admin_at_scale.py [--repeat 5]

Logs in as a superuser (created if missing) through the whole Django stack in this
process (sessions, the admin, templates; no network) and prints the median time and the
SQL statements of each page: the changelists, their filters and searches, a deep page,
the change pages of a batch, a job, an attempt and a worker, and the dashboard. Target
(issue 10): every page under 300 ms on this machine. A bare Django view's time is
printed for reference. The machine is shared: read medians.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from batches.models import Batch, Tool  # noqa: E402
from jobs.models import Attempt, Job, Worker  # noqa: E402

TARGET_MS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    setup_test_environment()  # the test client's ALLOWED_HOSTS
    total = Job.objects.order_by().count()
    if total < 100_000:
        raise SystemExit(f"only {total} jobs here: fill the database first (see this script's docstring)")
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
    pages = [
        ("bare Django view (/healthz)", "/healthz"),
        ("dashboard", "/admin/dashboard/"),
        ("batches", "/admin/batches/batch/"),
        ("batches of one owner", f"/admin/batches/batch/?owner__id__exact={owner.pk}"),
        ("batches of one tool", f"/admin/batches/batch/?tool__id__exact={tool.pk}"),
        ("batches, search owner", f"/admin/batches/batch/?q={owner.username}"),
        ("batches, search name", "/admin/batches/batch/?q=load+17"),
        ("batch page", f"/admin/batches/batch/{batch.pk}/change/"),
        ("jobs", "/admin/jobs/job/"),
        ("jobs, page 5000", "/admin/jobs/job/?p=5000"),
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
    print(f"{total:,} jobs, {Batch.objects.count():,} batches; median of {options.repeat}, target {TARGET_MS} ms")
    over = 0
    for label, url in pages:
        queries: list[str] = []

        def count(execute, sql, *args, queries=queries):
            queries.append(sql)
            return execute(sql, *args)

        with connection.execute_wrapper(count):
            response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code}")
        times = []
        for _ in range(options.repeat):
            started = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - started)
        ms = statistics.median(times) * 1000
        verdict = "ok" if ms < TARGET_MS else "OVER"
        over += verdict == "OVER"
        print(f"{label:<32} {ms:8.1f} ms  {len(queries):3d} queries  {verdict}")
    print(f"{len(pages) - over} of {len(pages)} pages under {TARGET_MS} ms")


if __name__ == "__main__":
    main()
