"""Benchmark: how long a job waits from submission to RUNNING on an idle worker.

    .venv/bin/python bench/submit_to_running.py [--rounds 30]

A real `manage.py runworker` waits with nothing to do; the script submits a one-job
batch through the service, waits for it to finish, pauses (so the worker is idle again)
and repeats. The wait is the job's RUNNING time (recorded by the worker when the process
has started) minus the batch's creation time, both from this machine's clock; p50 and
p90 are printed, with the poll interval for comparison (on PostgreSQL a submission wakes
the worker at once; on SQLite it is found at the next poll). A fresh SQLite database in
a temporary directory is used unless DATABASE_URL is set (then it must be disposable).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import harness
from harness import ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--idle", type=float, default=0.3, help="seconds between rounds")
    options = parser.parse_args()

    harness.prepare_environment()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from batches.models import Filesystem, Tool
    from jobs.models import Job
    from jobs.submission import submit_batch

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench")
    tool, _ = Tool.objects.update_or_create(name="bench-noop", defaults={"command": ["/bin/true"], "parameters": {}})
    scratch, _ = Filesystem.objects.get_or_create(name="bench-scratch", defaults={"path": tempfile.gettempdir(), "public": True})
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runworker", "--cpus", "1", "--memory", "256"], cwd=ROOT)
    waits: list[float] = []
    try:
        harness.wait_for_worker(worker)
        time.sleep(1.0)
        for _ in range(options.rounds):
            batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=256, filesystem_ids=[scratch.pk], jobs=[{"args": {}}])
            job = Job.objects.filter(batch=batch)
            while job.exclude(status__in=["SUCCEEDED", "FAILED"]).exists():
                time.sleep(0.005)
            started = job.values_list("start_time", flat=True).get()
            waits.append((started - batch.create_time).total_seconds() * 1000)
            time.sleep(options.idle)
    finally:
        worker.terminate()
        worker.wait()
    waits.sort()
    p90 = waits[min(len(waits) - 1, int(len(waits) * 0.9))]
    print(f"submit -> RUNNING on an idle worker ({connection.vendor}, {options.rounds} rounds, poll {settings.BATCHES_WORKER_POLL_MS} ms):")
    print(f"p50 {statistics.median(waits):.1f} ms, p90 {p90:.1f} ms, max {waits[-1]:.1f} ms (target p50 < 100 ms)")


if __name__ == "__main__":
    main()
