"""Benchmark: a batch through the slurm executor against the same tasks sent straight to
Slurm with one `sbatch --array`, end to end on the same cluster, in one run.

    .venv/bin/python bench/slurm_vs_sbatch.py [--jobs 1000] [--rounds 1]

Needs a cluster that answers `sinfo` (`scripts/slurm-cluster start`). The raw side is one
`sbatch --array=0-(N-1)` of a shell script that runs `/bin/echo`, timed from the sbatch
until squeue lists none of its tasks as pending or running. The executor side is the
real thing: a `manage.py runworker` with BATCHES_EXECUTOR=slurm, a batch of N echo jobs
submitted through the service, timed from the submission until the worker has recorded
the last job's end (its stop_time): placing, claiming, sbatch, squeue, the job script,
logs, every state change and event. Rounds alternate (raw, executor, raw, ...); medians
are printed. A fresh SQLite database in a temporary folder is used unless DATABASE_URL
is set (then that database must be empty or disposable).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import harness
from harness import ROOT, wait_for_worker


def raw_seconds(jobs: int, folder: str) -> float:
    script = os.path.join(folder, "raw.sh")
    with open(script, "w") as handle:
        handle.write("#!/bin/sh\nexec /bin/echo hello\n")
    os.chmod(script, 0o755)  # noqa: S103 (a throwaway script of the benchmark's own)
    started = time.perf_counter()
    job_id = subprocess.run(  # noqa: S603
        ["sbatch", "--parsable", f"--array=0-{jobs - 1}", "--output=/dev/null", "--mem=256M", "--no-requeue", script],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    while subprocess.run(["squeue", "--noheader", f"--jobs={job_id}"], capture_output=True, text=True, check=False).stdout.strip():  # noqa: S603, S607
        time.sleep(0.1)
    return time.perf_counter() - started


def executor_seconds(jobs: int, env: dict[str, str]) -> float:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db.models import Max
    from django.utils import timezone

    from batches.models import Filesystem, Tool
    from jobs.models import Job
    from jobs.submission import submit_batch

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench")
    tool, _ = Tool.objects.update_or_create(name="bench-echo", defaults={"command": ["/bin/echo", "hello"], "parameters": {}})
    scratch, _ = Filesystem.objects.get_or_create(name="bench-scratch", defaults={"path": tempfile.gettempdir(), "public": True})
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runworker"], cwd=ROOT, env=env, stderr=subprocess.PIPE)  # noqa: S603
    try:
        wait_for_worker(worker)
        started = timezone.now()
        batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=256, filesystem_ids=[scratch.pk], jobs=[{"args": {}}] * jobs)
        unfinished = Job.objects.filter(batch=batch, status__in=["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"])
        while unfinished.exists():
            time.sleep(0.1)
        failed = Job.objects.filter(batch=batch, status="FAILED")
        if failed.exists():
            raise SystemExit(f"{failed.count()} job(s) failed: {failed.first().reason}")
        return (Job.objects.filter(batch=batch).aggregate(end=Max("stop_time"))["end"] - started).total_seconds()
    finally:
        worker.terminate()
        worker.communicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    harness.prepare_environment(BATCHES_EXECUTOR="slurm", BATCHES_WORKER_POLL_MS="100", BATCHES_SLURM_POLL_MS="500")
    if subprocess.run(["sinfo", "--noheader"], capture_output=True, check=False).returncode != 0:  # noqa: S607
        raise SystemExit("no Slurm cluster answers sinfo: scripts/slurm-cluster start")
    folder = tempfile.mkdtemp(prefix="batches-bench-slurm-")
    raw: list[float] = []
    ours: list[float] = []
    print(f"{options.jobs} echo tasks per side, {options.rounds} round(s)")
    for round_number in range(1, options.rounds + 1):
        raw.append(raw_seconds(options.jobs, folder))
        ours.append(executor_seconds(options.jobs, dict(os.environ)))
        print(
            f"round {round_number}: one sbatch --array {raw[-1]:6.1f} s   slurm executor {ours[-1]:6.1f} s   ratio {ours[-1] / raw[-1]:.2f}"
        )
    median_raw, median_ours = statistics.median(raw), statistics.median(ours)
    print(f"median: sbatch --array {median_raw:.1f} s ({options.jobs / median_raw:.1f} tasks/s), executor {median_ours:.1f} s")
    print(f"ratio executor/raw: {median_ours / median_raw:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
