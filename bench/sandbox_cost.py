"""Benchmark: what sealing costs per attempt.

    sudo .venv/bin/python bench/sandbox_cost.py [--jobs 200] [--rounds 5] [--job-user batches-job]

The same no-op jobs go through a real `runworker`, unsealed (BATCHES_ISOLATION=off: the
baseline) and sealed (BATCHES_ISOLATION=auto with the job user, bubblewrap sandbox,
cgroup memory, pids and cpu: everything, checked in force; run as root), interleaved
`--rounds` times (unsealed, sealed, unsealed, ...). One job at a time, so the difference
of the two median times per job is the cost of sealing one attempt. Uses
`executor_vs_raw`'s worker harness, on the bench database (DATABASE_URL, else
postgres://postgres@127.0.0.1:5432/batches_bench; emptied first).
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import executor_vs_raw  # noqa: E402 (the harness beside this file)
import harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--job-user", default=os.environ.get("BATCHES_JOB_USER") or "batches-job")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sealed worker switches to the job user")
    executor_vs_raw.prepare_environment()  # BATCHES_ISOLATION: set per run below
    harness.setup_django()
    harness.fresh_database()
    harness.vacuum_analyze()
    # Neither side makes sealing required for the deployment (the unsealed worker would
    # then refuse to start): each worker's own isolation is checked instead.
    plain_env = {**os.environ, "BATCHES_ISOLATION": "off", "BATCHES_JOB_USER": "", "BATCHES_REQUIRE_ISOLATION": "0"}
    sealed_env = {**os.environ, "BATCHES_ISOLATION": "auto", "BATCHES_JOB_USER": options.job_user, "BATCHES_REQUIRE_ISOLATION": "0"}
    harness.print_config(
        "sandbox_cost: a sealed attempt against an unsealed one",
        isolation=f"baseline off (BATCHES_ISOLATION=off); measured sealed (auto, job user {options.job_user}, every part checked in force)",
        slots="1 (runworker --cpus 1: one job at a time)",
        batch_size=f"{options.jobs} no-op jobs (/bin/true) per round",
        rounds=f"{options.rounds}, interleaved (unsealed, sealed, ...); a fresh worker each round",
        vacuumed="VACUUM ANALYZE on the emptied database",
    )
    plain, sealed = harness.interleave(
        options.rounds,
        lambda: executor_vs_raw.executor_rate(options.jobs, 1, plain_env, sealed=False)[0],
        lambda: executor_vs_raw.executor_rate(options.jobs, 1, sealed_env, sealed=True)[0],
        label="(jobs/s)",
    )
    per_job_plain = [1 / rate for rate in plain]
    per_job_sealed = [1 / rate for rate in sealed]
    print("results (time per job, one at a time; baseline = unsealed):")
    harness.compare("time per job", per_job_plain, per_job_sealed, baseline_label="unsealed")
    cost = (statistics.median(per_job_sealed) - statistics.median(per_job_plain)) * 1000
    print(f"   sealing costs {cost:.2f} ms per attempt (difference of the medians; target well under 50 ms)")


if __name__ == "__main__":
    main()
