"""Benchmark: N no-op jobs through the local executor vs the same N processes spawned
directly, with the same parallelism, bare and through a memory limit (`prlimit --as`).

    .venv/bin/python bench/executor_vs_raw.py [--jobs 1000] [--rounds 3] [--parallel 2] [--backlog 20000]
    .venv/bin/python bench/executor_vs_raw.py --jobs 2000 --backlog 100000   # the normal case

The executor side is the real thing: a `manage.py runworker` process offering
`--parallel` cpus, a batch of `--jobs` jobs of a one-core `/bin/true` tool submitted
through the service, timed from submission until every job is SUCCEEDED (so it
includes placing, claiming, every state change and event, log files and working
directories). The raw side spawns `/bin/true` with subprocess, keeping `--parallel`
processes running, bare and through `prlimit --as=<256 MiB>` (what a per-job memory
limit by exec costs). Rounds alternate, raw first (prlimit raw, bare raw, executor,
...), `--rounds` times; medians and the ratios to both are printed. Unsealed (BATCHES_ISOLATION=off: the
execution core; bench/sandbox_cost.py measures what sealing adds). On the bench
database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench; emptied
first).

It also prints the SQL statements the worker ran per job (from the worker's own count),
and, with `--backlog N`, runs the executor side again after queueing N jobs in other
batches that no worker can run (larger than it; settled PENDING, as dispatch leaves
them): a worker must not slow down because a backlog waits beside its work.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import cpu_use
import harness
from harness import ROOT, wait_for_worker

SEALED = ("job_user", "sandbox", "cgroup_memory", "cgroup_pids", "cgroup_cpu")

NOOP = "/bin/true"


def raw_rate(jobs: int, parallel: int, argv: list[str] | None = None, *, pin: bool = False, cpu: list[dict] | None = None) -> float:
    """Jobs/s of `argv` (/bin/true) spawned `parallel` at a time. `pin`: each on a core of
    its own, the way the local executor pins an unsealed attempt (the spawning thread
    pinned to the core for the spawn). `cpu`: where this run's cpu went is appended
    (bench.cpu_use: this process, its spawns, PostgreSQL)."""
    cores = sorted(os.sched_getaffinity(0))
    before = cpu_use.read(os.getpid()) if cpu is not None else None
    started = time.perf_counter()
    running: dict[int, tuple[subprocess.Popen, int]] = {}  # pid -> (process, its core)
    launched = 0
    while launched < jobs or running:
        while launched < jobs and len(running) < parallel:
            used = [core for _, core in running.values()]
            core = min(cores, key=used.count)  # the least used
            if pin:
                os.sched_setaffinity(0, [core])
            try:
                process = subprocess.Popen(argv or [NOOP], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finally:
                if pin:
                    os.sched_setaffinity(0, cores)
            running[process.pid] = (process, core)
            launched += 1
        pid, status = os.wait()
        running.pop(pid)[0].returncode = os.waitstatus_to_exitcode(status)
    rate = jobs / (time.perf_counter() - started)
    if before is not None:
        cpu.append(cpu_use.per_job(before, cpu_use.read(os.getpid()), jobs))
    return rate


def executor_rate(
    jobs: int, parallel: int, env: dict[str, str], *, sealed: bool | None = None, cpu: list[dict] | None = None
) -> tuple[float, float]:
    """Jobs per second through a real worker, and SQL statements per job. `sealed`:
    check that the worker reports every isolation part in force (True) or none (False).
    `cpu`: where the run's cpu went is appended (bench.cpu_use: the worker, its jobs,
    PostgreSQL), from the submission to the last job's end. The database is set up by
    the caller (harness.fresh_database())."""
    harness.setup_django()
    from django.contrib.auth.models import User
    from django.db.models import Max
    from django.utils import timezone

    from batches.models import Filesystem, Tool
    from jobs.models import Job
    from jobs.submission import submit_batch

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
        env={**env, "LOG_LEVEL": "INFO"},
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_worker(worker)
        if sealed is not None:
            isolation = harness.worker_isolation(worker)
            in_force = [part for part in SEALED if isolation.get(part)]
            if in_force != (list(SEALED) if sealed else []):
                raise SystemExit(f"the worker was to be {'sealed' if sealed else 'unsealed'}; it reports {isolation}")
        # Timed from just before the submission to the moment the worker recorded the
        # last job's end (its stop_time, written with its SUCCEEDED event): the wait
        # below only notices the end and adds nothing to the figure. Both times come
        # from this machine's clock.
        before = cpu_use.read(worker.pid) if cpu is not None else None
        started = timezone.now()
        batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=256, filesystem_ids=[scratch.pk], jobs=[{"args": {}}] * jobs)
        unfinished = Job.objects.filter(batch=batch, status__in=["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"])
        while unfinished.exists():  # an index-only look-up on (batch, status)
            time.sleep(0.05)
        if before is not None:
            cpu.append(cpu_use.per_job(before, cpu_use.read(worker.pid), jobs))
        elapsed = (Job.objects.filter(batch=batch).aggregate(end=Max("stop_time"))["end"] - started).total_seconds()
        failed = Job.objects.filter(batch=batch, status="FAILED").count()
        if failed:
            raise SystemExit(f"{failed} job(s) failed: {Job.objects.filter(batch=batch, status='FAILED').first().reason}")
        rate = jobs / elapsed
    finally:
        worker.terminate()
        _, err = worker.communicate()
    match = re.search(rb"(\d+) attempt end\(s\) recorded with (\d+) SQL statement", err)
    statements = int(match.group(2)) / max(int(match.group(1)), 1) if match else float("nan")
    return rate, statements


def add_backlog(count: int, cpus: int) -> None:
    """`count` jobs in batches of 100,000 that need more cpus than the worker offers,
    settled PENDING with the reason dispatch gives them."""
    from django.contrib.auth.models import User
    from django.db import connection

    from batches.models import Batch, Tool
    from jobs.models import Job
    from jobs.services import create_jobs

    user, _ = User.objects.get_or_create(username="backlog")
    tool = Tool.objects.get(name="bench-noop")
    started = time.perf_counter()
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        batch = Batch.objects.create(owner=user, tool=tool, command=tool.command, cpu=cpus + 1, memory=256, n_jobs=n, timeout_seconds=60)
        create_jobs(batch=batch, arguments=[{}] * n)
    Job.objects.filter(batch__owner=user).update(status="PENDING", reason="No worker can run it")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE jobs_job")
    print(f"backlog: {count} jobs queued in other batches ({time.perf_counter() - started:.0f} s to set up)")


def prepare_environment() -> None:
    # The execution core, unsealed: bench/sandbox_cost.py measures what sealing adds.
    harness.prepare_environment(BATCHES_WORKER_POLL_MS="50", BATCHES_ISOLATION="off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per round (the normal case: 2000 with --backlog 100000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--backlog", type=int, default=20_000, help="then again with this many jobs queued in other batches")
    options = parser.parse_args()

    prepare_environment()
    harness.setup_django()
    harness.fresh_database()
    harness.vacuum_analyze()
    harness.print_config(
        "executor_vs_raw: no-op jobs through a local runworker against raw spawns",
        isolation="off (BATCHES_ISOLATION=off, checked: the worker reports no part in force)",
        slots=f"{options.parallel} (runworker --cpus {options.parallel}; raw keeps {options.parallel} processes running)",
        batch_size=f"{options.jobs} no-op jobs ({NOOP}) per round",
        rounds=f"{options.rounds}, interleaved (raw via prlimit, raw, executor, ...); a fresh worker each executor round",
        backlog=f"{options.backlog:,} jobs waiting in other batches (a second set of rounds)" if options.backlog else "none",
        vacuumed="VACUUM ANALYZE on the emptied database (and again after the backlog, if any)",
    )
    statements: list[float] = []

    def executed() -> float:
        rate, per_job = executor_rate(options.jobs, options.parallel, dict(os.environ), sealed=False)
        statements.append(per_job)
        return rate

    # What a memory limit by exec costs: the same spawns through `prlimit --as=...`, in
    # every round beside the bare ones (the executor's own limit costs as much).
    prlimit = shutil.which("prlimit")
    limited: list[float] = []

    def raw() -> float:
        if prlimit:
            limited.append(raw_rate(options.jobs, options.parallel, [prlimit, f"--as={256 * 1024 * 1024}", "--", NOOP]))
        return raw_rate(options.jobs, options.parallel)

    raw_rates, ours = harness.interleave(options.rounds, raw, executed, label="(jobs/s; bare raw, executor)")
    print("results (jobs per second; baseline = raw spawn; higher is better):")
    harness.compare("local executor", raw_rates, ours, unit="/s", scale=1, baseline_label="raw", target="target ratio >= 0.5")
    if limited:
        harness.compare("local executor vs raw via prlimit", limited, ours, unit="/s", scale=1, baseline_label="prlimit")
        print(
            f"   {'':<38} raw via prlimit is {statistics.median(limited) / statistics.median(raw_rates):.2f} of bare raw (the limit's own cost)"
        )
    print(f"   {'':<38} {statistics.median(statements):.2f} SQL statements per job (the worker's count)")
    if options.backlog:
        add_backlog(options.backlog, options.parallel)
        # Not interleaved: the backlog stays once queued; the baseline is the executor's
        # rounds above, on the same database before the backlog.
        behind = [executed() for _ in range(options.rounds)]
        print("   (baseline below: the executor rounds above, before the backlog; not interleaved)")
        harness.compare(
            "local executor, behind a backlog", ours, behind, unit="/s", scale=1, baseline_label="empty", target="target ratio >= 0.8"
        )


if __name__ == "__main__":
    main()
