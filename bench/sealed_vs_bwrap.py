"""Benchmark: sealed no-op jobs through a real worker against raw bubblewrap spawns with
the same namespaces at the same parallelism, and what each part of sealing costs.

    sudo .venv/bin/python bench/sealed_vs_bwrap.py [--jobs 500] [--parallel 2] [--repeats 3]
    sudo .venv/bin/python bench/sealed_vs_bwrap.py --jobs 1000      # the figures of issue 7

Run as root (it switches accounts and makes cgroups), with bubblewrap installed. On the
bench database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench;
emptied first). The job account is a pool account (`job_accounts --pool 1`),
as a tenant of a sealed deployment gets.

Measured interleaved, `--repeats` times each, medians quoted (the machine is shared):
- raw `/bin/true`: subprocess spawns, keeping `--parallel` running;
- raw + account: the same, started as the job account (Popen user=, group=, which
  forks; the worker switches through setpriv instead, which keeps vfork);
- raw + sandbox: the same through bwrap with the executor's own flags (its argv);
- raw + cgroups: a memory, pids, cpuset and cpuacct cgroup made, joined before exec
  (a preexec_fn: a fork) and removed, per spawn;
- raw, all three: what the worker does by hand, without a database;
- worker: a `runworker` sealing every job (BATCHES_REQUIRE_ISOLATION=1), timed from
  submission to the last job's recorded end, as bench/executor_vs_raw.py does.
"""

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import executor_vs_raw  # noqa: E402 (the harness beside this file)
import harness  # noqa: E402

NOOP = "/bin/true"
MEMORY = 256 * 1024 * 1024


def spawn_rate(jobs: int, parallel: int, start: Callable[[int], tuple[subprocess.Popen, Callable[[], None]]]) -> float:
    """Spawns per second, `parallel` at a time; `start(i)` starts one and gives what to
    do after it exits (remove its cgroup...)."""
    began = time.perf_counter()
    running: dict[int, tuple[subprocess.Popen, Callable[[], None]]] = {}
    launched = 0
    while launched < jobs or running:
        while launched < jobs and len(running) < parallel:
            process, after = start(launched)
            running[process.pid] = (process, after)
            launched += 1
        pid, status = os.wait()
        process, after = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        after()
    return jobs / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: sealing switches accounts and makes cgroups")
    harness.prepare_environment(BATCHES_WORKER_POLL_MS="50", BATCHES_ISOLATION="auto")
    harness.setup_django()
    from django.core.management import call_command

    from jobs.executors.cgroups import Cgroups
    from jobs.executors.isolation import probe, sandbox_argv

    harness.fresh_database()
    harness.vacuum_analyze()
    call_command("job_accounts", "--pool", "1", stdout=open(os.devnull, "w"))  # noqa: SIM115
    from accounts.models import JobAccount

    account = pwd.getpwnam(JobAccount.objects.get().username)
    isolation = probe(job_user="")
    if isolation.bwrap is None or isolation.cgroups is None:
        raise SystemExit(f"this machine cannot seal jobs: {isolation.describe()}")
    cgroups: Cgroups = isolation.cgroups
    work = Path(tempfile.mkdtemp(prefix="bench-sealed-"))
    work.chmod(0o755)
    bwrap = sandbox_argv(bwrap=isolation.bwrap, workdir=work / "w", filesystems=[("/tmp", False)], argv=[NOOP], workdir_bytes=MEMORY)
    as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}

    def plain(_: int):
        return subprocess.Popen([NOOP], **quiet), lambda: None  # noqa: S603

    def with_account(_: int):
        return subprocess.Popen([NOOP], **quiet, **as_account), lambda: None  # noqa: S603

    def with_sandbox(_: int):
        return subprocess.Popen(bwrap, **quiet), lambda: None  # noqa: S603

    def cgrouped(argv: list[str], extra: dict) -> Callable[[int], tuple[subprocess.Popen, Callable[[], None]]]:
        def start(i: int):
            # The account joins the cgroup itself (preexec_fn runs after the switch).
            owner = extra.get("user")
            group = cgroups.create(
                name=f"bench-{os.getpid()}-{i}", memory_bytes=MEMORY, max_processes=64, cores=[i % os.cpu_count()], owner=owner
            )
            process = subprocess.Popen(argv, **quiet, **extra, preexec_fn=group.join)  # noqa: S603, PLW1509
            return process, group.remove

        return start

    raw = {
        "raw /bin/true": plain,
        "raw + account": with_account,
        "raw + sandbox (bwrap)": with_sandbox,
        "raw + cgroups": cgrouped([NOOP], {}),
        "raw, all three": cgrouped(bwrap, as_account),
    }
    sealed_env = {**os.environ, "BATCHES_ISOLATION": "auto", "BATCHES_JOB_USER": "", "BATCHES_REQUIRE_ISOLATION": "1"}
    harness.print_config(
        "sealed_vs_bwrap: sealed jobs through a worker against raw sealed spawns",
        isolation="sealed: a pool job account, bubblewrap, cgroups (BATCHES_REQUIRE_ISOLATION=1 for the worker; checked in force)",
        slots=f"{options.parallel} (runworker --cpus {options.parallel}; raw keeps {options.parallel} running)",
        batch_size=f"{options.jobs} no-op jobs ({NOOP}) per run",
        rounds=f"{options.repeats}, interleaved: the five raw variants, then the worker, each round",
        cgroups=f"v{cgroups.version}",
        vacuumed="VACUUM ANALYZE on the emptied database",
    )
    figures: dict[str, list[float]] = {name: [] for name in [*raw, "worker, sealed"]}
    for _ in range(options.repeats):
        for name, start in raw.items():
            figures[name].append(spawn_rate(options.jobs, options.parallel, start))
        rate, statements = executor_vs_raw.executor_rate(options.jobs, options.parallel, sealed_env, sealed=True)
        figures["worker, sealed"].append(rate)
        print(f"   worker run: {rate:.1f} jobs/s, {statements:.2f} SQL statements per job", flush=True)
    print(f"results (spawns or jobs per second, medians of {options.repeats} interleaved runs):")
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"   {name:24} {value:8.1f} /s   {1000 / value:6.2f} ms each   runs: {', '.join(f'{v:.1f}' for v in figures[name])}")
    base = medians["raw /bin/true"]
    for part in ("raw + account", "raw + sandbox (bwrap)", "raw + cgroups"):
        print(f"   cost of {part[6:]:18} {1000 / medians[part] - 1000 / base:6.2f} ms per spawn")
    worker = figures["worker, sealed"]
    harness.compare("worker / raw bwrap", figures["raw + sandbox (bwrap)"], worker, unit="/s", scale=1, target="target ratio >= 0.5")
    harness.compare("worker / raw, all three", figures["raw, all three"], worker, unit="/s", scale=1)


if __name__ == "__main__":
    main()
