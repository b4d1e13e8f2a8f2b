"""Benchmark: a batch through the slurm executor against the same tasks sent straight to
Slurm with one `sbatch --array`, end to end on the same cluster, in one run.

    .venv/bin/python bench/slurm_vs_sbatch.py [--jobs 50] [--rounds 2]
    .venv/bin/python bench/slurm_vs_sbatch.py --jobs 1000     # issue 8's size

Needs a cluster that answers `sinfo` (`scripts/slurm-cluster start`). The raw side is one
`sbatch --array=0-(N-1)` of a shell script that runs `/bin/echo`, timed from the sbatch
until squeue lists none of its tasks as pending or running. The executor side is the
real thing: a `manage.py runworker` with BATCHES_EXECUTOR=slurm, a batch of N echo jobs
submitted through the service, timed from the submission until the worker has recorded
the last job's end (its stop_time): placing, claiming, sbatch, squeue, the job script,
logs, every state change and event. Rounds alternate (raw, executor, raw, ...); medians
and the ratio are printed. Unsealed (BATCHES_ISOLATION=off unless set: the raw side's
tasks are not sealed either). On the bench database (DATABASE_URL, else
postgres://postgres@127.0.0.1:5432/batches_bench; emptied first). The cluster is
shared: keep sizes small.
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
    harness.setup_django()
    from django.contrib.auth.models import User
    from django.db.models import Max
    from django.utils import timezone

    from batches.models import Filesystem, Tool
    from jobs.models import Job
    from jobs.submission import submit_batch

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
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    harness.prepare_environment(
        BATCHES_EXECUTOR="slurm",
        BATCHES_WORKER_POLL_MS="100",
        BATCHES_SLURM_POLL_MS="500",
        BATCHES_ISOLATION="off",
        BATCHES_REQUIRE_ISOLATION="0",
    )
    if subprocess.run(["sinfo", "--noheader"], capture_output=True, check=False).returncode != 0:  # noqa: S607
        raise SystemExit("no Slurm cluster answers sinfo: scripts/slurm-cluster start")
    harness.setup_django()
    harness.fresh_database()
    harness.vacuum_analyze()
    nodes = subprocess.run(["sinfo", "--noheader", "-o", "%P %D %c %t"], capture_output=True, text=True, check=False).stdout.split()  # noqa: S607
    harness.print_config(
        "slurm_vs_sbatch: a batch through the slurm executor against one sbatch --array",
        isolation=f"BATCHES_ISOLATION={os.environ['BATCHES_ISOLATION']} (the raw tasks are not sealed either)",
        slots=f"the cluster's (sinfo: partition, nodes, cpus per node, state: {' '.join(nodes)})",
        batch_size=f"{options.jobs} echo tasks per side",
        rounds=f"{options.rounds}, interleaved (sbatch --array, executor, ...); a fresh worker each executor round",
        vacuumed="VACUUM ANALYZE on the emptied database",
    )
    folder = tempfile.mkdtemp(prefix="batches-bench-slurm-")
    raw, ours = harness.interleave(
        options.rounds, lambda: raw_seconds(options.jobs, folder), lambda: executor_seconds(options.jobs, dict(os.environ)), label="(s)"
    )
    print("results (seconds end to end; baseline = one sbatch --array):")
    harness.compare(f"{options.jobs} tasks", raw, ours, unit="s", scale=1, baseline_label="sbatch", target="target ratio <= 1.5")
    print(
        f"   {'':<38} sbatch --array {options.jobs / statistics.median(raw):.1f} tasks/s, executor {options.jobs / statistics.median(ours):.1f} tasks/s"
    )


if __name__ == "__main__":
    main()
