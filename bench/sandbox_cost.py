"""Benchmark: what sealing costs per attempt.

    sudo .venv/bin/python bench/sandbox_cost.py [--jobs 500] [--job-user batches-job]

The same no-op jobs go through a real `runworker` twice in one run: unsealed
(BATCHES_ISOLATION=off) and sealed (job user, bubblewrap sandbox, cgroup memory and
pids: everything the machine offers; run as root). One job at a time, so the difference
of the two times per job is the cost of sealing one attempt. Uses `executor_vs_raw`'s
worker harness (a fresh database each time unless DATABASE_URL is set).
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import executor_vs_raw  # noqa: E402 (the harness beside this file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--job-user", default=os.environ.get("BATCHES_JOB_USER", "batches-job"))
    options = parser.parse_args()
    executor_vs_raw.prepare_environment()  # BATCHES_ISOLATION: set per run below
    plain, _ = executor_vs_raw.executor_rate(options.jobs, 1, {**os.environ, "BATCHES_ISOLATION": "off"})
    sealed_env = {**os.environ, "BATCHES_ISOLATION": "auto", "BATCHES_JOB_USER": options.job_user, "BATCHES_REQUIRE_ISOLATION": "1"}
    sealed, _ = executor_vs_raw.executor_rate(options.jobs, 1, sealed_env)
    print(f"{options.jobs} no-op jobs, one at a time")
    print(f"unsealed: {plain:7.1f} jobs/s ({1000 / plain:.2f} ms per job)")
    print(f"sealed:   {sealed:7.1f} jobs/s ({1000 / sealed:.2f} ms per job)")
    print(f"sealing costs {1000 / sealed - 1000 / plain:.2f} ms per attempt (target well under 50 ms)")


if __name__ == "__main__":
    main()
