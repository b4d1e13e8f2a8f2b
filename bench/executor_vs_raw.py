"""Benchmark: N no-op jobs through the local executor vs the same N processes spawned
directly, with the same parallelism.

    .venv/bin/python bench/executor_vs_raw.py [--jobs 2000] [--parallel 2]

The executor side is the real thing: a `manage.py runworker` process offering
`--parallel` cpus, a batch of `--jobs` jobs of a one-core `/bin/true` tool submitted
through the service, timed from submission until every job is SUCCEEDED (so it
includes placing, claiming, every state change and event, log files and working
directories). The raw side spawns `/bin/true` with subprocess, keeping `--parallel`
processes running. A fresh SQLite database in a temporary directory is used unless
DATABASE_URL is set (then that database must be empty or disposable).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOOP = "/bin/true"


def raw_rate(jobs: int, parallel: int) -> float:
    started = time.perf_counter()
    running: dict[int, subprocess.Popen] = {}
    launched = 0
    while launched < jobs or running:
        while launched < jobs and len(running) < parallel:
            process = subprocess.Popen([NOOP], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running[process.pid] = process
            launched += 1
        pid, status = os.wait()
        running.pop(pid).returncode = os.waitstatus_to_exitcode(status)
    return jobs / (time.perf_counter() - started)


def executor_rate(jobs: int, parallel: int, env: dict[str, str]) -> float:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db.models import Max
    from django.utils import timezone

    from batches.models import Filesystem, Tool
    from batches.services import submit_batch
    from jobs.models import Job, Worker

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench")
    tool, _ = Tool.objects.update_or_create(name="bench-noop", defaults={"command": [NOOP], "parameters": {}})
    scratch, _ = Filesystem.objects.get_or_create(name="bench-scratch", defaults={"path": tempfile.gettempdir(), "public": True})
    worker = subprocess.Popen(
        [
            sys.executable,
            *os.environ.get("BENCH_PROFILE", "").split(),
            str(ROOT / "manage.py"),
            "runworker",
            "--cpus",
            str(parallel),
            "--memory",
            str(parallel * 256),
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not Worker.objects.filter(state="ACTIVE", pid=worker.pid).exists():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the worker did not start")
            time.sleep(0.1)
        # Timed from just before the submission to the moment the worker recorded the
        # last job's end (its stop_time, written with its SUCCEEDED event): the wait
        # below only notices the end and adds nothing to the figure. Both times come
        # from this machine's clock.
        started = timezone.now()
        batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=256, filesystem_ids=[scratch.pk], jobs=[{"args": {}}] * jobs)
        unfinished = Job.objects.filter(batch=batch, status__in=["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"])
        while unfinished.exists():  # an index-only look-up on (batch, status)
            time.sleep(0.05)
        elapsed = (Job.objects.filter(batch=batch).aggregate(end=Max("stop_time"))["end"] - started).total_seconds()
        failed = Job.objects.filter(batch=batch, status="FAILED").count()
        if failed:
            raise SystemExit(f"{failed} job(s) failed: {Job.objects.filter(batch=batch, status='FAILED').first().reason}")
        return jobs / elapsed
    finally:
        worker.terminate()
        worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=len(os.sched_getaffinity(0)))
    options = parser.parse_args()

    data = tempfile.mkdtemp(prefix="batches-bench-")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")
    os.environ["BATCHES_DATA_DIR"] = data
    os.environ.setdefault("BATCHES_WORKER_POLL_MS", "50")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))

    print(f"{options.jobs} no-op jobs ({NOOP}), parallelism {options.parallel}, {os.cpu_count()} cpu(s)")
    raw = raw_rate(options.jobs, options.parallel)
    print(f"raw spawn:      {raw:8.1f} processes/s")
    executed = executor_rate(options.jobs, options.parallel, dict(os.environ))
    print(f"local executor: {executed:8.1f} jobs/s")
    print(f"ratio executor/raw: {executed / raw:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
