"""What an attempt used, measured for real on each backend (issue 20): local sealed (the
attempt's cgroup), local unsealed (wait4's rusage) and Slurm (the task wrapper's wait4 on
the node). A job that holds 300 MiB and spins the cpu for 2 s prints what it did, as it
saw it from inside; the attempt row must agree: max RSS within 10 %, cpu-seconds 2 +- 0.3
(and within 0.3 of the job's own), elapsed within 0.2 s of the job's own (from its
process's start to its end). A job that kills itself with signal 9 reports signal 9 and
`reason_code` `signal`; one past its timeout, `reason_code` `timeout`. Slurm runs twice:
unsealed, and sealed (the task in bubblewrap as the tenant's job account, as
tests/test_slurm_sealed.py runs it).

The sealed tests skip without root, bubblewrap or cgroups, and the Slurm ones without a
cluster, saying why; with BATCHES_REQUIRE_ISOLATION=1 and BATCHES_REQUIRE_SLURM=1 (CI)
they fail instead. Each test prints the figures it compared (pytest -s shows them)."""

import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from jobs.executors.isolation import Isolation
from jobs.executors.slurm import SlurmExecutor
from jobs.models import Attempt, Job
from jobs.worker import WorkerConfig, WorkerLoop
from tests.test_isolation import filesystems, log_of, sealed_isolation, submit  # noqa: F401 (fixtures)
from tests.test_slurm import _PROBLEM as SLURM_PROBLEM
from tests.worker_helpers import all_finished, drive, in_process_loop, python_tool, script_tool

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Holds 300 MiB (every page touched), spins until 2 s of cpu, frees it, then prints what it did:
# its peak RSS and cpu time (getrusage), and its elapsed time from its process's start
# (/proc/self/stat, in clock ticks since boot) to now, so the interpreter's start counts.
HOG = """
import json, os, resource, time
block = bytearray(300 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
while time.process_time() < 2.0:
    pass
del block  # freed before the figures are taken: what is left after them is the exit alone
usage = resource.getrusage(resource.RUSAGE_SELF)
with open("/proc/self/stat") as stat:
    started = int(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - started
print("USAGE " + json.dumps({"rss_mib": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime, "elapsed": elapsed}))
"""
SUICIDE = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"

BACKENDS = ["local-sealed", "local-unsealed", "slurm", "slurm-sealed"]


def _skip_or_fail(message: str, *, required: str) -> None:
    if os.environ.get(required) == "1":
        pytest.fail(f"{required} is set: {message}")
    pytest.skip(message)


@pytest.fixture(params=BACKENDS)
def loop(request, settings) -> Iterator[WorkerLoop]:
    """A worker of each backend, in this process."""
    if request.param == "local-sealed":
        loop = in_process_loop(isolation=sealed_isolation(), grace=0.5)
    elif request.param == "local-unsealed":
        loop = in_process_loop(isolation=Isolation.none("the unsealed case: wait4's rusage"), grace=0.5)
    else:
        if SLURM_PROBLEM is not None:
            _skip_or_fail(SLURM_PROBLEM, required="BATCHES_REQUIRE_SLURM")
        settings.BATCHES_ISOLATION = "off" if request.param == "slurm" else "auto"
        # Not under tmp_path: any pytest starting as root meanwhile (another session on
        # the machine) makes /tmp/pytest-of-root 0700 again, and a sealed task's account
        # could no longer reach its status folder (PermissionError writing its exit file).
        settings.BATCHES_SLURM_DIR = Path(tempfile.mkdtemp(prefix="batches-test-slurm-"))
        settings.BATCHES_SLURM_POLL_MS = 200
        settings.BATCHES_SLURM_COMMAND_TIMEOUT = 5
        settings.BATCHES_KILL_GRACE_SECONDS = 1
        SlurmExecutor._ready = (float("-inf"), None)
        if request.param == "slurm-sealed":
            # As tests/test_slurm_sealed.py: each tenant's tasks in the sandbox, as its own account.
            missing = SlurmExecutor(cpus=4, memory_mib=4096).isolation.missing
            if missing:
                _skip_or_fail(f"Slurm jobs cannot be sealed here: {missing}", required="BATCHES_REQUIRE_ISOLATION")
            call_command("job_accounts", "--pool", "2", stdout=io.StringIO())
        loop = WorkerLoop(
            executor=SlurmExecutor(cpus=4, memory_mib=4096), config=WorkerConfig(lease_seconds=30, poll_seconds=0.1, fencing=False)
        )
        loop.start()
    loop.backend = request.param
    yield loop
    loop.stop()
    if request.param.startswith("slurm") and settings.BATCHES_SLURM_DIR.exists():
        for folder in settings.BATCHES_SLURM_DIR.iterdir():
            if folder.is_dir():
                subprocess.run(["scancel", f"--name=batches-{folder.name}"], capture_output=True, check=False)  # noqa: S603, S607
        shutil.rmtree(settings.BATCHES_SLURM_DIR, ignore_errors=True)


def only_attempt(job: Job) -> Attempt:
    (attempt,) = Attempt.objects.filter(job=job)
    return attempt


def test_max_rss_cpu_seconds_and_elapsed_are_what_the_job_did(loop, alice, filesystems):  # noqa: F811
    batch = submit(alice, python_tool("usage-hog", HOG), [filesystems["scratch"]], [{"args": {}}], memory=1024)
    drive(loop, all_finished(batch), timeout=90)
    job = Job.objects.get(batch=batch)
    log = log_of(job)
    if job.status != "SUCCEEDED" and loop.backend.startswith("slurm"):
        from tests.test_slurm_sealed import story

        raise AssertionError(story(job))
    did = json.loads(log.split("USAGE ", 1)[1].splitlines()[0])
    attempt = only_attempt(job)
    print(
        f"\n{loop.backend}: job saw rss {did['rss_mib']:.1f} MiB, cpu {did['cpu']:.3f} s, elapsed {did['elapsed']:.3f} s; "
        f"attempt says rss {attempt.max_rss_mib} MiB, cpu {attempt.cpu_seconds} s, elapsed {attempt.elapsed_seconds} s"
    )
    assert attempt.reason_code == "succeeded" and attempt.exit_code == 0 and attempt.signal is None
    assert (attempt.memory_mib, attempt.cpus) == (1024, 1)
    if attempt.max_rss_mib is None and loop.backend == "local-unsealed":
        # wait4's peak of a process forked from the worker starts at the worker's own
        # peak (exec keeps the old image's high-water mark), and a figure not above it
        # is reported as unknown rather than as the worker's: in a long pytest run this
        # process has grown past the job's 300 MiB. Unsealed is for development only;
        # sealed jobs are measured by their cgroup.
        import resource

        worker_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert worker_peak_mib >= 0.9 * did["rss_mib"], (worker_peak_mib, did)
    else:
        assert abs(attempt.max_rss_mib - did["rss_mib"]) <= 0.1 * did["rss_mib"], (attempt.max_rss_mib, did)
    assert abs(attempt.cpu_seconds - 2.0) <= 0.3, (attempt.cpu_seconds, did)
    assert abs(attempt.cpu_seconds - did["cpu"]) <= 0.3, (attempt.cpu_seconds, did)
    assert abs(attempt.elapsed_seconds - did["elapsed"]) <= 0.2, (attempt.elapsed_seconds, did)
    # Start and end are stored to the sub-second: no more "0.0 s".
    assert abs((attempt.end_time - attempt.start_time).total_seconds() - attempt.elapsed_seconds) <= 0.5


def test_a_job_killed_by_signal_9_says_so(loop, alice, filesystems):  # noqa: F811
    batch = submit(alice, python_tool("usage-suicide", SUICIDE), [filesystems["scratch"]], [{"args": {}}])
    drive(loop, all_finished(batch), timeout=60)
    job = Job.objects.get(batch=batch)
    attempt = only_attempt(job)
    print(f"\n{loop.backend}: {job.status} {job.reason!r}; attempt signal {attempt.signal}, reason_code {attempt.reason_code}")
    assert job.status == "FAILED", (job.reason, log_of(job))
    assert job.reason.startswith("killed by signal 9 (SIGKILL)"), job.reason
    assert (attempt.signal, attempt.reason_code, attempt.exit_code) == (9, "signal", None)
    assert attempt.elapsed_seconds is not None and attempt.elapsed_seconds < 5


def test_a_timeout_has_reason_code_timeout(loop, alice, filesystems):  # noqa: F811
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "sleep 100"}}], timeout_seconds=2)
    drive(loop, all_finished(batch), timeout=60)
    job = Job.objects.get(batch=batch)
    attempt = only_attempt(job)
    print(f"\n{loop.backend}: {job.status} {job.reason!r}; attempt reason_code {attempt.reason_code}, elapsed {attempt.elapsed_seconds}")
    assert (job.status, job.reason) == ("FAILED", "timed out after 2 s")
    assert attempt.reason_code == "timeout"
    assert 2.0 <= attempt.elapsed_seconds < 4, attempt.elapsed_seconds  # the issue: FAILED `timeout` within 4 s


def test_a_small_job_never_reports_the_memory_it_was_started_from(loop, alice, filesystems):  # noqa: F811
    """`execve` keeps the high-water mark of the image a program replaced: wait4 gave an
    `echo` the worker's 74 MiB. A figure not above that floor is null; a cgroup has none."""
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "echo small"}}])
    drive(loop, all_finished(batch), timeout=60)
    attempt = only_attempt(Job.objects.get(batch=batch))
    print(f"\n{loop.backend}: a small job's max RSS: {attempt.max_rss_mib} MiB, cpu {attempt.cpu_seconds} s")
    assert attempt.reason_code == "succeeded"
    assert attempt.max_rss_mib is None or attempt.max_rss_mib < 16, attempt.max_rss_mib
    assert attempt.cpu_seconds is not None and attempt.cpu_seconds < 0.5


def test_the_workers_peak_is_never_read_below_its_vmhwm():
    """The floor under which an unsealed job's max RSS is null must be at least the
    worker's high-water mark (VmHWM), which a spawned program inherits through execve;
    it is read with getrusage (one system call per spawn) rather than from /proc."""
    from jobs.executors.usage import own_peak_rss_bytes

    grown = bytearray(64 << 20)  # the peak goes up by 64 MiB, then the memory is freed
    del grown
    status = Path("/proc/self/status").read_text()
    vmhwm = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    assert own_peak_rss_bytes() >= vmhwm
