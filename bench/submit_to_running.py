"""Benchmark: how long a job waits from submission to RUNNING on an idle worker, sealed
(the job user, bubblewrap, cgroups) against unsealed (BATCHES_ISOLATION=off).

    sudo .venv/bin/python bench/submit_to_running.py [--rounds 25] [--blocks 3] [--history 20000]
    sudo .venv/bin/python bench/submit_to_running.py --history 100000     # the normal case

Run as root (a sealed worker switches to the job user: --job-user, default
$BATCHES_JOB_USER or batches-job). On the bench database (DATABASE_URL, else
postgres://postgres@127.0.0.1:5432/batches_bench; emptied first, then `--history`
finished jobs in it, VACUUM ANALYZE). A real `manage.py runworker` (one cpu) waits with
nothing to do; the script submits a one-job batch through the service, waits for it to
finish, pauses (so the worker is idle again) and repeats. The wait is the job's RUNNING
time (recorded by the worker when the process has started) minus the batch's creation
time, both from this machine's clock. Blocks alternate: an unsealed worker for
`--rounds` rounds (the baseline), then a sealed one (the measured run), `--blocks`
times; the sealed worker's reported isolation is checked to be complete. p50 and p99
of each side and their ratios are printed, with the poll interval for comparison (on
PostgreSQL a submission wakes the worker at once).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import harness
from harness import ROOT

SEALED = ("job_user", "sandbox", "cgroup_memory", "cgroup_pids", "cgroup_cpu")


def block(env: dict[str, str], *, sealed: bool, rounds: int, idle: float, user: object, tool: object, scratch: object) -> list[float]:
    """One block: a fresh `runworker` (1 cpu, 256 MiB) with `env`, checked sealed or not,
    then `rounds` one-job batches submitted one at a time, each after the last ended and
    `idle` seconds of pause. Returns each job's wait, submission to RUNNING, in seconds
    (its RUNNING time minus its batch's creation time, both this machine's clock)."""
    from jobs.models import Job
    from jobs.submission import submit_batch

    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runworker", "--cpus", "1", "--memory", "256"], cwd=ROOT, env=env)
    waits: list[float] = []
    try:
        harness.wait_for_worker(worker)
        isolation = harness.worker_isolation(worker)
        in_force = [part for part in SEALED if isolation.get(part)]
        if sealed and len(in_force) != len(SEALED):
            raise SystemExit(f"the sealed worker is not sealed: {isolation}")
        if not sealed and in_force:
            raise SystemExit(f"the unsealed worker seals: {isolation}")
        time.sleep(1.0)
        for _ in range(rounds):
            batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=256, filesystem_ids=[scratch.pk], jobs=[{"args": {}}])
            job = Job.objects.filter(batch=batch)
            while job.exclude(status__in=["SUCCEEDED", "FAILED"]).exists():
                time.sleep(0.005)
            status, reason, started = job.values_list("status", "reason", "start_time").get()
            if status != "SUCCEEDED":
                raise SystemExit(f"the job {status}: {reason}")
            waits.append((started - batch.create_time).total_seconds())
            time.sleep(idle)
    finally:
        worker.terminate()
        worker.wait()
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25, help="jobs per block")
    parser.add_argument("--blocks", type=int, default=3, help="unsealed/sealed block pairs")
    parser.add_argument("--history", type=int, default=20_000, help="finished jobs in the database (100,000: the normal case)")
    parser.add_argument("--idle", type=float, default=0.3, help="seconds between rounds")
    parser.add_argument("--job-user", default=os.environ.get("BATCHES_JOB_USER") or "batches-job")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sealed worker switches to the job user")

    # Neither side requires isolation of the deployment (a required policy would stop
    # the unsealed worker from starting); each worker's own isolation is set below.
    harness.prepare_environment(BATCHES_REQUIRE_ISOLATION="0")
    harness.setup_django()
    from django.conf import settings
    from django.contrib.auth.models import User

    from batches.models import Batch, Filesystem, Tool
    from jobs.models import Job
    from jobs.services import create_jobs

    harness.fresh_database()
    user, _ = User.objects.get_or_create(username="bench")
    tool, _ = Tool.objects.update_or_create(name="bench-noop", defaults={"command": ["/bin/true"], "parameters": {}})
    scratch, _ = Filesystem.objects.get_or_create(name="bench-scratch", defaults={"path": tempfile.gettempdir(), "public": True})
    if options.history:
        old = Batch.objects.create(
            owner=user, tool=tool, command=tool.command, cpu=1, memory=256, n_jobs=options.history, timeout_seconds=60
        )
        create_jobs(batch=old, arguments=[{}] * options.history)
        Job.objects.filter(batch=old).update(status="SUCCEEDED", attempts=1, charged_attempts=1)
    harness.vacuum_analyze()

    unsealed_env = {**os.environ, "BATCHES_ISOLATION": "off", "BATCHES_JOB_USER": ""}
    sealed_env = {**os.environ, "BATCHES_ISOLATION": "auto", "BATCHES_JOB_USER": options.job_user}
    harness.print_config(
        "submit_to_running: submission -> RUNNING on an idle worker",
        isolation=f"baseline unsealed (BATCHES_ISOLATION=off); measured sealed (BATCHES_ISOLATION=auto, job user {options.job_user}, "
        "all of job_user, sandbox, cgroup memory/pids/cpu checked in force)",
        slots="one runworker offering 1 cpu, 256 MiB; one one-job batch at a time",
        batch_size=f"1 job (/bin/true); {options.history:,} finished jobs already in the database",
        rounds=f"{options.blocks} x (unsealed block, sealed block) of {options.rounds} jobs, {options.idle} s idle between",
        poll=f"{settings.BATCHES_WORKER_POLL_MS} ms (PostgreSQL wakes the worker at once on submission)",
        vacuumed="VACUUM ANALYZE after the history was inserted",
    )

    def run(env: dict[str, str], sealed: bool) -> list[float]:
        return block(env, sealed=sealed, rounds=options.rounds, idle=options.idle, user=user, tool=tool, scratch=scratch)

    unsealed, sealed = harness.interleave(
        options.blocks, lambda: run(unsealed_env, False), lambda: run(sealed_env, True), label="(seconds; unsealed, sealed)"
    )
    print(f"results (submission -> RUNNING, {len(unsealed)} jobs per side; baseline = unsealed; target p50 < 100 ms):")
    harness.compare("submit -> RUNNING, idle worker", unsealed, sealed, p99=True, baseline_label="unsealed")


if __name__ == "__main__":
    main()
