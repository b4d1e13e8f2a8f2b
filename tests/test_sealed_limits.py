"""What a sealed local job cannot take beyond what it asked for (issue 17), each tried
as a hostile tenant did: disk through its log, cores through its affinity, files in
/etc, and what cancel owes it (SIGTERM and the grace before SIGKILL). Without root,
bubblewrap or cgroups these skip with the reason; with BATCHES_REQUIRE_ISOLATION=1 (CI)
they fail instead."""

import errno
import os
import platform
import time
from pathlib import Path

import pytest
from django.conf import settings

from jobs.executors import isolation as isolation_module
from jobs.executors import seccomp
from jobs.models import Job
from jobs.services import cancel_jobs
from tests.test_isolation import filesystems, isolation, log_of, submit  # noqa: F401 (fixtures)
from tests.worker_helpers import all_finished, drive, in_process_loop, python_tool, script_tool

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


@pytest.fixture
def loop(isolation):  # noqa: F811 (the fixture imported above)
    loop = in_process_loop(isolation=isolation, grace=3.0)
    yield loop
    loop.stop()


def test_preallocating_the_log_takes_no_disk(loop, alice, filesystems):  # noqa: F811
    """fallocate(1, FALLOC_FL_KEEP_SIZE, 0, 1 GiB) on stdout took 1 GiB of disk while the
    log's size stayed 104 bytes, so the cap never fired. The job's output is a pipe now:
    nothing to preallocate, and what it writes past the cap stops it."""
    code = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
        "rc = libc.fallocate(1, 1, 0, 1 << 30)\n"
        "print('fallocate', rc, os.strerror(ctypes.get_errno()), flush=True)\n"
        "sys.stdout.write('x' * (3 << 20))\n"
    )
    loop.executor.log_max_bytes = MIB
    batch = submit(alice, python_tool("prealloc", code), [filesystems["scratch"]], [{"args": {}}])
    drive(loop, all_finished(batch), timeout=30)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "log over 1 MiB"), log_of(job)
    log = settings.BATCHES_LOG_DIR / f"{job.log_id}.log"
    # What the log takes on disk: its blocks, not its size.
    assert log.stat().st_blocks * 512 <= MIB + 64 * 1024, log.stat()
    assert "fallocate -1" in log_of(job)


def test_a_job_cannot_take_more_cores_than_it_asked_for(loop, alice, filesystems):  # noqa: F811
    """sched_setaffinity(0, all cores) gave a cpu=1 job 1.69 cores. Four processes that
    widen their affinity and spin, measured from the attempt's cgroup cpu time."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to take beyond it")
    code = (
        "import os, time\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        os.sched_setaffinity(0, range(os.cpu_count()))\n"
        "        end = time.monotonic() + 6\n"
        "        while time.monotonic() < end: pass\n"
        "        os._exit(0)\n"
        "for _ in range(4): os.wait()\n"
    )
    batch = submit(alice, python_tool("spin", code), [filesystems["scratch"]], [{"args": {}}], cpu=1)
    job = Job.objects.get(batch=batch)
    drive(loop, lambda: str(job.pk) in loop.executor._running)
    run = loop.executor._running[str(job.pk)]
    time.sleep(1.0)  # the four have started
    cpu0, wall0 = run.cgroup.cpu_seconds(), time.monotonic()
    time.sleep(3.0)
    cpu1, wall1 = run.cgroup.cpu_seconds(), time.monotonic()
    cores = (cpu1 - cpu0) / (wall1 - wall0)
    assert cores <= 1.1, f"{cores:.2f} cores used"
    # Only that it ran: on a loaded machine (CI beside other suites) a spinning job may
    # get far less than its core, never more.
    assert cpu1 > cpu0, "no cpu time at all: did the job run?"
    cancel_jobs(jobs=Job.objects.filter(pk=job.pk))
    drive(loop, all_finished(batch), timeout=30)


def test_only_the_etc_files_a_job_needs_are_visible(loop, alice, filesystems):  # noqa: F811
    """All of /etc was visible: slurm.conf, rabbitmq.conf, any 0644 file an operator
    leaves there."""
    secret = Path("/etc/batches-test-not-for-jobs.conf")
    secret.write_text("OPERATOR SECRET\n")
    secret.chmod(0o644)
    try:
        script = "cat /etc/batches-test-not-for-jobs.conf; ls /etc; id -un; getent hosts localhost"
        batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": script}}])
        drive(loop, all_finished(batch))
    finally:
        secret.unlink()
    job = Job.objects.get(batch=batch)
    log = log_of(job)
    assert "OPERATOR SECRET" not in log
    listed = set(log.split())
    assert {"passwd", "group", "hosts", "ld.so.cache"} <= listed, log
    assert not listed & {"munge", "slurm", "shadow", "batches", "postgresql", "rabbitmq"}, log
    assert "localhost" in log  # names resolve


def test_cancel_gives_a_sandboxed_job_its_grace(loop, alice, filesystems):  # noqa: F811
    """A job that traps SIGTERM logged `cleanup start` and was killed before `cleanup
    done`: bubblewrap died of the TERM and took the sandbox with it."""
    script = "trap 'echo cleanup start; sleep 1; echo cleanup done; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": script}}])
    job = Job.objects.get(batch=batch)
    drive(loop, lambda: "ready" in log_of(job))
    cancelled_at = time.monotonic()
    cancel_jobs(jobs=Job.objects.filter(pk=job.pk))
    drive(loop, all_finished(batch), timeout=30)
    job.refresh_from_db()
    assert (job.status, job.reason) == ("FAILED", "Cancelled by user")
    assert "cleanup start" in log_of(job) and "cleanup done" in log_of(job), log_of(job)
    assert time.monotonic() - cancelled_at < 3.0 + 2.0  # within the grace, not after a SIGKILL


def test_machine_wide_kernel_pools_are_out_of_a_jobs_reach(loop, alice, filesystems):  # noqa: F811
    """One job held all 65,536 asynchronous I/O events of the machine (fs.aio-max-nr):
    every other tenant's io_setup failed until it ended. The sandbox's seccomp filter
    answers io_setup, io_uring and the like ENOSYS."""
    machine = platform.machine()
    if machine not in seccomp._DENIED:
        pytest.skip(f"no seccomp filter for {machine}")
    numbers = seccomp._DENIED[machine][1]
    code = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "ctx = ctypes.c_ulong(0)\n"
        "for name, number in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    rc = libc.syscall(int(number), 8, ctypes.byref(ctx), 0, 0)\n"
        "    print(name, rc, ctypes.get_errno())\n"
        "print('getpid', libc.syscall(39 if ctypes.sizeof(ctypes.c_void_p) == 8 else 20) > 0)\n"
    )
    calls = ["io_setup", "io_uring_setup", "perf_event_open", "bpf", "userfaultfd"]
    tool = python_tool("kernel-pools", code, extra=[item for name in calls for item in (name, str(numbers[name]))])
    batch = submit(alice, tool, [filesystems["scratch"]], [{"args": {}}])
    drive(loop, all_finished(batch))
    log = log_of(Job.objects.get(batch=batch))
    for name in calls:
        assert f"{name} -1 {errno.ENOSYS}" in log, log
    if machine == "x86_64":
        assert "getpid True" in log, log  # the rest is untouched


@pytest.mark.parametrize("cgexec", [True, False], ids=["cgexec", "spawning-thread"])
def test_both_ways_into_the_cgroup_hold_the_limits(cgexec, loop, alice, filesystems, monkeypatch):  # noqa: F811
    """cgroup v1: a job's first process enters its cgroup through cgexec (cgroup-tools)
    or, without it, by the worker's spawning thread entering it for the spawn."""
    if loop.executor.isolation.cgroups.version != 1:
        pytest.skip("cgroup v2 joins before exec")
    if cgexec and isolation_module.CGEXEC is None:
        pytest.skip("cgroup-tools (cgexec) is not installed")
    if not cgexec:
        monkeypatch.setattr(isolation_module, "CGEXEC", None)
    hog = python_tool("hog-both-ways", "x = bytearray(300 * 1024 * 1024)\nprint('allocated')")
    batch = submit(alice, hog, [filesystems["scratch"]], [{"args": {}}], memory=128)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "killed: out of memory (limit 128 MiB)"), log_of(job)


def test_a_log_that_cannot_be_written_stops_the_attempt_saying_why(tmp_path, settings):
    """The worker writes every log itself: a full disk raised out of its loop (no
    timeout or cancel was seen while it lasted) and lost the attempt's outcome."""
    from jobs.executors.attempt_output import AttemptOutput

    settings.BATCHES_LOG_DIR = tmp_path
    output = AttemptOutput(path=tmp_path / "full-disk.log", attempt=1, cap=MIB, group=None)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, output.log_fd)
    os.close(full)
    os.write(output.write_fd, b"some output\n")
    output.started()
    assert output.drain() is True
    assert output.failed == "could not write the log: No space left on device"
    output.close()  # no exception, every file closed
    assert output.read_fd is None
