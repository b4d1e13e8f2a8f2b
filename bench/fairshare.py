"""Benchmark: issue 19's figures (fair share at scale), each against a baseline measured
in the same run, interleaved (baseline, measured, baseline, ...), repeated; medians,
p99 where latency is the figure, and ratios.

    .venv/bin/python bench/fairshare.py [--parts 1,2,3,4] [--rounds 3] [--parallel 2]
    .venv/bin/python bench/fairshare.py --levels 10000,100000,1000000   # the normal case

1. Big batch against small: jobs/s of a `--big` (100,000) job batch over the first
   `--window` (30) seconds after its submission returned, against a `--small` (2,000)
   job batch (jobs/s from its submission to its last end, or over the same window).
   One fresh `runworker --cpus P` per round, unsealed; the big batch is fresh (no
   ANALYZE: what a submission leaves). Target >= 0.9x.
2. One dispatch decision (`jobs.claiming._claim_candidates`: the plan and the fetch of
   the jobs it picks, locked, in a transaction rolled back) for a worker taking 128
   jobs, with `--levels` RUNNABLE jobs waiting across `--users` (1,000) users (a batch
   each, the same batches at every level, so that the levels differ in waiting jobs
   only; 64 users with a running job, each with some usage), against a bare fetch of 128 RUNNABLE jobs by the (status, batch, id) index.
   p50 and p99 at each level; target p99 <= 50 ms and flat from the first level to the
   last. The full claim (with its writes, rolled back) is printed beside it.
3. No-op jobs (/bin/true) through a real worker (fair share is always on: each claim
   plans in fair-share order) against raw spawns through the same per-job memory limit
   (`prlimit --as=<256 MiB>`), P at a time; for reference, bare raw spawns and raw spawns
   through prlimit pinned a core each as the worker pins its jobs. Target >= 0.5x. Where
   each job's cpu goes (the spawning process, the jobs, PostgreSQL, the machine:
   bench/cpu_use.py) is printed for both sides.
4. Submission to RUNNING of one-job batches on an idle worker (`submit_to_running.block`):
   sealed (when run as root; the deployment's way) against unsealed, p50 and p99.
   Target p50 <= 50 ms.

On PostgreSQL (DATABASE_URL, else the bench database; emptied before each part).
"""

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import cpu_use
import executor_vs_raw
import harness
import submit_to_running
from harness import ROOT

NOOP = "/bin/true"
CLAIM = 128  # jobs a worker takes per claim at most (jobs.worker._CLAIM_LIMIT)


def _bench_objects() -> tuple[Any, Any, Any]:
    from django.contrib.auth.models import User

    from batches.models import Filesystem, Tool

    user, _ = User.objects.get_or_create(username="bench")
    tool, _ = Tool.objects.update_or_create(name="bench-noop", defaults={"command": [NOOP], "parameters": {}})
    scratch, _ = Filesystem.objects.get_or_create(name="bench-scratch", defaults={"path": tempfile.gettempdir(), "public": True})
    return user, tool, scratch


# -- 1. a big batch against a small one ------------------------------------------------
def batch_rate(*, jobs: int, parallel: int, window: float, env: dict[str, str]) -> float:
    """Jobs/s of one `jobs`-job batch through a fresh worker: jobs ended within `window`
    seconds of the submission's return, over that window (or, when all ended sooner,
    over the time to the last end). What is left is failed by hand, the worker stopped."""
    from django.db.models import Max
    from django.utils import timezone

    from jobs.models import Job
    from jobs.submission import submit_batch

    user, tool, scratch = _bench_objects()
    cmd = [sys.executable, str(ROOT / "manage.py"), "runworker", "--cpus", str(parallel), "--memory", str(parallel * 256)]
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        harness.wait_for_worker(worker)
        batch = submit_batch(user=user, tool_id=tool.pk, cpu=1, memory=256, filesystem_ids=[scratch.pk], jobs=[{"args": {}}] * jobs)
        t0 = timezone.now()
        queued = Job.objects.filter(batch=batch, status__in=["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"])
        deadline = time.monotonic() + window
        while time.monotonic() < deadline and queued.exists():
            time.sleep(0.2)
        time.sleep(0.5)  # the worker writes what ended within its record interval
        ended = Job.objects.filter(batch=batch, status="SUCCEEDED", stop_time__lte=t0 + timezone.timedelta(seconds=window))
        count = ended.count()
        span = window
        if count == jobs:
            span = min(window, (ended.aggregate(end=Max("stop_time"))["end"] - t0).total_seconds())
    finally:
        worker.terminate()
        worker.wait()
    Job.objects.filter(batch=batch).exclude(status__in=["SUCCEEDED", "FAILED"]).update(status="FAILED", reason="bench: stopped")
    return count / span


def part_big_batch(options: argparse.Namespace) -> None:
    harness.fresh_database()
    env = {**os.environ, "BATCHES_ISOLATION": "off", "BATCHES_WORKER_POLL_MS": "50"}
    harness.print_config(
        "fairshare 1: a big batch against a small one",
        slots=f"{options.parallel} (a fresh runworker --cpus {options.parallel} per batch, poll 50 ms), unsealed (BATCHES_ISOLATION=off)",
        batch_size=f"baseline {options.small:,} jobs, measured {options.big:,} jobs of /bin/true, one user, submitted in-process",
        window=f"jobs ended within {options.window:.0f} s of the submission's return, over that window (or to the last end)",
        rounds=f"{options.rounds}, interleaved (small, big, ...); no ANALYZE after a submission",
    )
    small, big = harness.interleave(
        options.rounds,
        lambda: batch_rate(jobs=options.small, parallel=options.parallel, window=options.window, env=env),
        lambda: batch_rate(jobs=options.big, parallel=options.parallel, window=options.window, env=env),
        label="(jobs/s; small, big)",
    )
    print("results (jobs per second; baseline = the small batch; higher is better):")
    harness.compare(
        f"{options.big:,}-job batch", small, big, unit="/s", scale=1, baseline_label=f"{options.small:,}", target="target ratio >= 0.9"
    )


# -- 2. one dispatch decision with a large backlog -------------------------------------
def fill_backlog(*, batches: list[Any], have: int, add: int) -> None:
    """`add` more RUNNABLE jobs spread evenly over `batches` (one per user), after the
    `have` already there, inserted in one statement (ids random, as good as time-ordered
    for the claim's cost). The batches stay the same from one level to the next, so the
    levels differ in waiting jobs only."""
    from django.db import connection
    from django.db.models import F

    from batches.models import Batch

    start, per_batch = have // len(batches), max(add // len(batches), 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO jobs_job (id, batch_id, index, args, log_id, status, reason, attempts, create_time, charged_attempts)"
            " SELECT gen_random_uuid(), b, g, '{}'::jsonb, gen_random_uuid(), 'RUNNABLE', 'Waiting for a worker', 0, now(), 0"
            " FROM unnest(%s::uuid[]) AS b, generate_series(%s, %s - 1) AS g",
            [[b.pk for b in batches], start, start + per_batch],
        )
    Batch.objects.filter(pk__in=[b.pk for b in batches]).update(n_jobs=F("n_jobs") + per_batch)


def running_and_usage(*, users: list[Any], worker: Any) -> None:
    """64 users with a running job (a live attempt), every user some decayed usage."""
    from django.utils import timezone

    from jobs.models import Attempt, Job, Usage

    now = timezone.now()
    Usage.objects.bulk_create([Usage(user=u, cpu_seconds=float(i % 97) * 100, as_of=now) for i, u in enumerate(users)])
    running = [Job.objects.filter(batch__owner=u, status="RUNNABLE").order_by("id").first() for u in users[:64]]
    Job.objects.filter(pk__in=[j.pk for j in running]).update(status="RUNNING", worker=worker, attempts=1)
    Attempt.objects.bulk_create(
        [Attempt(job=j, number=1, executor="local", worker=worker, state="RUNNING", start_time=now) for j in running]
    )


def bare_fetch() -> float:
    """The floor: 128 RUNNABLE jobs by the (status, batch, id) index, locked, rolled back."""
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, attempts, log_id, args FROM jobs_job WHERE status = 'RUNNABLE'"
            " ORDER BY status, batch_id, id LIMIT %s FOR UPDATE SKIP LOCKED",
            [CLAIM],
        )
        cursor.fetchall()
        transaction.set_rollback(True)
    return time.perf_counter() - started


def decision(worker: Any, *, full: bool) -> float:
    """One dispatch decision (plan + fetch), or with `full` the whole claim with its
    writes; rolled back either way."""
    from django.db import transaction

    from jobs import claiming
    from jobs.executors.base import Capacity

    room, fits = Capacity(CLAIM, CLAIM * 256), Capacity(2, 512)
    started = time.perf_counter()
    with transaction.atomic():
        if full:
            specs, _ = claiming.claim_jobs(worker=worker, room=room, fits=fits, limit=CLAIM)
        else:
            specs = claiming._claim_candidates(room=room, fits=fits, exclude=[], limit=CLAIM)
        transaction.set_rollback(True)
    elapsed = time.perf_counter() - started
    if len(specs) != CLAIM:
        raise SystemExit(f"the claim took {len(specs)} jobs, not {CLAIM}")
    return elapsed


def part_decision(options: argparse.Namespace) -> None:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from jobs.models import Worker

    harness.fresh_database()
    levels = [int(x) for x in options.levels.split(",")]
    _, tool, _ = _bench_objects()
    users = User.objects.bulk_create([User(username=f"fs{i:04d}") for i in range(options.users)])
    far = timezone.now() + timezone.timedelta(days=1)
    worker = Worker.objects.create(name="bench", node="bench", cpus=2, memory_mib=512, lease_expires=far)
    gc.freeze()  # as runworker does before its loop: the process's own objects out of the collector's way
    harness.print_config(
        "fairshare 2: one dispatch decision with a large backlog",
        decision=f"jobs.claiming._claim_candidates for {CLAIM} jobs (room {CLAIM} cpu), in a transaction rolled back",
        baseline=f"bare SELECT of {CLAIM} RUNNABLE jobs by the (status, batch, id) index, FOR UPDATE SKIP LOCKED, rolled back",
        backlog=f"{', '.join(f'{n:,}' for n in levels)} RUNNABLE jobs across {options.users:,} users (one batch each, the same at every level)",
        running="64 users with one running job each; every user some decayed usage",
        samples=f"{options.samples} of each, interleaved, per level; no ANALYZE after the fill (autovacuum as configured)",
        process="this one, its startup objects frozen out of garbage collection (gc.freeze) as runworker does",
    )
    from batches.models import Batch

    batches = Batch.objects.bulk_create(
        [Batch(owner=u, tool=tool, command=tool.command, cpu=1, memory=256, n_jobs=0, timeout_seconds=60) for u in users]
    )
    have, figures = 0, []
    for level in levels:
        started = time.perf_counter()
        fill_backlog(batches=batches, have=have, add=level - have)
        if not have:
            running_and_usage(users=users, worker=worker)
        have = level
        print(f"   backlog {level:,} RUNNABLE jobs ({time.perf_counter() - started:.1f} s to fill)", flush=True)
        base, ours = harness.interleave(options.samples, bare_fetch, lambda: decision(worker, full=False))
        _, whole = harness.interleave(max(options.samples // 4, 5), bare_fetch, lambda: decision(worker, full=True))
        harness.compare(f"decision, {level:,} waiting", base, ours, p99=True, baseline_label="bare", target="target p99 <= 50 ms")
        print(
            f"   {'':<38} whole claim with its writes: p50 {statistics.median(whole) * 1000:.2f} ms, "
            f"p99 {harness.percentile(whole, 0.99) * 1000:.2f} ms (n={len(whole)})",
            flush=True,
        )
        figures.append((level, harness.percentile(ours, 0.99)))
    first, last = figures[0], figures[-1]
    print(f"   flatness: p99 at {last[0]:,} / p99 at {first[0]:,} = {last[1] / first[1]:.2f}x (flat: about 1)", flush=True)


# -- 3. no-op jobs against raw spawns through the same memory limit --------------------
def part_noop(options: argparse.Namespace) -> None:
    prlimit = shutil.which("prlimit")
    if not prlimit:
        raise SystemExit("part 3 needs prlimit (util-linux)")
    limited = [prlimit, f"--as={256 * 1024 * 1024}", "--", NOOP]
    harness.fresh_database()
    harness.vacuum_analyze()
    harness.print_config(
        "fairshare 3: no-op jobs through a worker against raw spawns through the same memory limit",
        isolation="off (BATCHES_ISOLATION=off, checked); fair share on (claims always plan in fair-share order)",
        slots=f"{options.parallel} (runworker --cpus {options.parallel}; raw keeps {options.parallel} processes running)",
        batch_size=f"{options.noop_jobs} no-op jobs ({NOOP}) per round",
        baseline=f"raw spawns of {' '.join(limited)}; bare raw spawns for reference",
        rounds=f"{options.rounds}, interleaved (bare raw, pinned prlimit raw, prlimit raw, worker, ...); a fresh worker each round",
    )
    bare: list[float] = []
    pinned: list[float] = []
    raw_cpu: list[dict] = []
    worker_cpu: list[dict] = []

    def baseline() -> float:
        bare.append(executor_vs_raw.raw_rate(options.noop_jobs, options.parallel))
        pinned.append(executor_vs_raw.raw_rate(options.noop_jobs, options.parallel, limited, pin=True))
        return executor_vs_raw.raw_rate(options.noop_jobs, options.parallel, limited, cpu=raw_cpu)

    def measured() -> float:
        env = {**os.environ, "BATCHES_ISOLATION": "off", "BATCHES_WORKER_POLL_MS": "50"}
        return executor_vs_raw.executor_rate(options.noop_jobs, options.parallel, env, sealed=False, cpu=worker_cpu)[0]

    raw, ours = harness.interleave(options.rounds, baseline, measured, label="(jobs/s; prlimit raw, worker)")
    print("results (jobs per second; higher is better):")
    harness.compare("worker vs raw through prlimit", raw, ours, unit="/s", scale=1, baseline_label="prlimit", target="target ratio >= 0.5")
    harness.compare("worker vs bare raw (reference)", bare, ours, unit="/s", scale=1, baseline_label="bare")
    # The worker pins each unsealed job to its cores (its cpu limit); the raw loop does not.
    harness.compare("worker vs raw via prlimit, pinned (ref.)", pinned, ours, unit="/s", scale=1, baseline_label="pinned")
    print(cpu_use.describe("raw through prlimit", raw_cpu, own="the loop", children="its spawns"))
    print(cpu_use.describe("worker", worker_cpu, own="the worker", children="its jobs"))


# -- 4. submission to RUNNING on an idle service ---------------------------------------
def part_submit(options: argparse.Namespace) -> None:
    harness.fresh_database()
    user, tool, scratch = _bench_objects()
    sealed = os.geteuid() == 0
    job_user = os.environ.get("BATCHES_JOB_USER") or "batches-job"
    unsealed_env = {**os.environ, "BATCHES_ISOLATION": "off", "BATCHES_JOB_USER": ""}
    sealed_env = {**os.environ, "BATCHES_ISOLATION": "auto", "BATCHES_JOB_USER": job_user}
    harness.vacuum_analyze()
    harness.print_config(
        "fairshare 4: submission -> RUNNING, one-job batches, idle worker",
        isolation=f"baseline unsealed; measured {'sealed (job user ' + job_user + ', every part checked)' if sealed else 'unsealed (not root)'}",
        slots="one runworker offering 1 cpu, 256 MiB; one one-job batch at a time",
        rounds=f"{options.rounds} x (unsealed block, measured block) of {options.submit_jobs} jobs, 0.3 s idle between",
    )

    def run(env: dict[str, str], seal: bool) -> list[float]:
        return submit_to_running.block(env, sealed=seal, rounds=options.submit_jobs, idle=0.3, user=user, tool=tool, scratch=scratch)

    base, ours = harness.interleave(
        options.rounds, lambda: run(unsealed_env, False), lambda: run(sealed_env if sealed else unsealed_env, sealed), label="(seconds)"
    )
    print("results (submission -> RUNNING; lower is better):")
    harness.compare("submit -> RUNNING, idle worker", base, ours, p99=True, baseline_label="unsealed", target="target p50 <= 50 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="4,3,1,2", help="which figures, in this order")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--levels", default="10000,100000,1000000")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--noop-jobs", type=int, default=1000)
    parser.add_argument("--submit-jobs", type=int, default=20)
    options = parser.parse_args()
    harness.prepare_environment(BATCHES_REQUIRE_ISOLATION="0")
    harness.setup_django()
    parts = {"1": part_big_batch, "2": part_decision, "3": part_noop, "4": part_submit}
    for part in options.parts.split(","):
        parts[part.strip()](options)


if __name__ == "__main__":
    main()
