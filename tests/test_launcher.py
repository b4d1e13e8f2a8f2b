"""Launchers (jobs.executors.launcher): the small processes that start unsealed local
attempts under their memory limit without prlimit's exec. Real processes throughout:
through the worker loop, and the launchers on their own."""

import contextlib
import errno
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from core import reason_codes
from jobs.executors import launcher as launcher_module
from jobs.executors.base import AttemptSpec, Outcome, Started
from jobs.executors.isolation import Isolation
from jobs.executors.launcher import LOST, MIB, MOST_LAUNCHERS, Launchers
from jobs.executors.local import LocalExecutor
from jobs.models import Attempt, Job
from tests.worker_helpers import all_finished, drive, in_process_loop, make_batch, pid_alive, script_tool, wait_for

SCRIPT = 'ulimit -H -v; ulimit -S -v; tr "\\0" " " < /proc/$PPID/cmdline; echo'


@pytest.fixture
def loop():
    loop = in_process_loop()
    yield loop
    loop.stop()


def log_lines(client, job: Job) -> list[str]:
    response = client.get(f"/logs/{job.log_id}")
    assert response.status_code == 200
    return response.content.decode().splitlines()


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@pytest.mark.django_db
def test_a_job_gets_its_memory_limit_from_a_launcher_not_from_an_exec_of_prlimit(loop, alice, alice_client, catalog):
    """The hard and soft limits are the job's memory, and the program's parent is the
    launcher (through prlimit it was the worker: prlimit execs into the program)."""
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": SCRIPT}}], memory=256)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    hard, soft, parent = log_lines(alice_client, job)
    assert hard == soft == str(256 * 1024)  # KiB
    assert "launcher_process.py" in parent
    attempt = Attempt.objects.get(job=job)
    assert attempt.cpu_seconds is not None and attempt.elapsed_seconds is not None  # the launcher's wait4


@pytest.mark.django_db
def test_a_launched_job_starts_as_any_job_does(loop, alice, alice_client, catalog, settings):
    """Started by a launcher, a job still gets its working directory, umask 077, its own
    session, no descriptor but 0-2, and SIGPIPE as default (the launcher is a Python
    process, which ignores it: a `yes | head` would then print an error)."""
    script = 'pwd; umask; ls /proc/self/fd | tr "\\n" " "; echo; yes | head -1; ps -o sid= -p $$ | tr -d " "; echo $$'
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}], memory=256)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    cwd, umask, fds, yes, sid, pid = log_lines(alice_client, job)
    assert cwd == str(settings.BATCHES_WORK_DIR / f"{job.pk}.1")
    assert umask == "0077"
    assert fds.split() == ["0", "1", "2", "3"]  # 3: ls's own, of /proc/self/fd
    assert yes == "y"
    assert sid == pid  # a session (and process group) of its own


@pytest.mark.django_db
def test_a_limit_too_small_for_a_launcher_goes_through_prlimit(loop, alice, alice_client, catalog):
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": SCRIPT}}], memory=64)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    hard, soft, parent = log_lines(alice_client, job)
    assert hard == soft == str(64 * 1024)
    assert "launcher_process.py" not in parent  # the worker: this test process


@pytest.mark.django_db
def test_a_job_whose_launcher_dies_is_killed_and_run_again_saying_why(loop, alice, catalog):
    """Its end can no longer be seen, so it is killed; that is not the job's fault, so
    it runs again (on a new launcher) without using up an attempt."""
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 30"}}], memory=256, max_attempts=1)
    drive(loop, lambda: Job.objects.filter(batch=batch, status="RUNNING").exists())
    job = Job.objects.get(batch=batch)
    pid = int(Attempt.objects.get(job=job).external_id)
    launcher = parent_of(pid)
    assert "launcher_process.py" in Path(f"/proc/{launcher}/cmdline").read_text()
    os.kill(launcher, signal.SIGKILL)
    drive(loop, lambda: Attempt.objects.filter(job=job, number=2).exclude(external_id="").exists())
    first, second = Attempt.objects.filter(job=job).order_by("number")
    assert (first.reason, first.reason_code) == (LOST, reason_codes.INTERNAL_ERROR)
    wait_for(lambda: not pid_alive(pid), timeout=5, message="the lost attempt's process was killed")
    new_launcher = parent_of(int(second.external_id))
    assert new_launcher != launcher and "launcher_process.py" in Path(f"/proc/{new_launcher}/cmdline").read_text()


def start(launchers: Launchers, tmp_path: Path, argv: list[str], *, limit_mib: int):
    """Ask for a spawn and wait for the launcher's answer (None: no launcher took it)."""
    read, write = os.pipe()
    try:
        launched = launchers.start(
            limit=limit_mib * MIB, argv=argv, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, out_fd=write, cores=[0], umask=0o077
        )
    finally:
        os.close(write)
        os.close(read)
    if launched is not None:
        wait_for(lambda: launchers.pump() or launched.answered, timeout=5, message="the launcher answers")
    return launched


def ended(launchers: Launchers, launched) -> bool:
    launchers.pump()
    return launched.returncode is not None


def test_a_program_that_cannot_be_executed_raises_its_errno(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    launchers = Launchers()
    try:
        refused = start(launchers, tmp_path, [str(garbage)], limit_mib=256)
        assert refused.pid is None and refused.error.errno == errno.ENOEXEC
        # The launcher serves on.
        launched = start(launchers, tmp_path, ["/bin/true"], limit_mib=256)
        wait_for(lambda: ended(launchers, launched), timeout=5)
        assert launched.returncode == 0 and launched.rusage is not None
    finally:
        launchers.close()


def test_more_limits_than_launchers_fall_back_to_prlimit_until_one_is_idle(tmp_path):
    launchers = Launchers()
    try:
        busy = [start(launchers, tmp_path, ["/bin/sleep", "30"], limit_mib=256 + i) for i in range(MOST_LAUNCHERS)]
        assert all(launched is not None for launched in busy)
        assert start(launchers, tmp_path, ["/bin/true"], limit_mib=512) is None  # all busy: the caller uses prlimit
        os.killpg(busy[0].pid, signal.SIGKILL)
        wait_for(lambda: ended(launchers, busy[0]), timeout=5)
        assert busy[0].returncode == -signal.SIGKILL
        launched = start(launchers, tmp_path, ["/bin/true"], limit_mib=512)  # the idle launcher made room
        assert launched is not None
        wait_for(lambda: ended(launchers, launched), timeout=5)
        assert launched.returncode == 0
    finally:
        for launched in busy:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launched.pid, signal.SIGKILL)
        launchers.close()


def test_a_request_too_large_for_one_packet_goes_through_prlimit(tmp_path):
    launchers = Launchers()
    try:
        assert start(launchers, tmp_path, ["/bin/echo", "x" * launcher_module.MAX_REQUEST], limit_mib=256) is None
    finally:
        launchers.close()


def test_closing_the_launchers_ends_them_and_leaves_running_jobs_alone(tmp_path):
    launchers = Launchers()
    launched = start(launchers, tmp_path, ["/bin/sleep", "30"], limit_mib=256)
    launcher_pid = parent_of(launched.pid)
    launchers.close()
    try:
        wait_for(lambda: not pid_alive(launcher_pid), timeout=5, message="the launcher exits when the worker hangs up")
        time.sleep(0.2)
        assert pid_alive(launched.pid)  # the worker's own stop (or its recovery) ends its jobs
    finally:
        os.killpg(launched.pid, signal.SIGKILL)


def executor_in(tmp_path: Path) -> LocalExecutor:
    executor = LocalExecutor(
        cpus=2, memory_mib=4096, grace_seconds=0.5, work_dir=tmp_path / "work", isolation=Isolation.none("launcher tests")
    )
    executor.bind("launcher-tests")
    return executor


def test_a_cancel_before_the_launcher_answered_stops_the_job_once_it_has(tmp_path, settings):
    settings.BATCHES_LOG_DIR = tmp_path / "logs"
    executor = executor_in(tmp_path)
    try:
        assert executor.submit([AttemptSpec("j1", "b", 1, "l1", ["/bin/sleep", "30"], 1, 256, 60)]) == []  # its Started comes later
        executor.cancel(keys=[("j1", 1)], reason="cancelled by its owner")
        reports = executor.collect_within(10, until=lambda got: any(isinstance(report, Outcome) for report in got))
        started, outcome = reports
        assert isinstance(started, Started) and started.external_id.isdigit()
        assert (outcome.succeeded, outcome.reason, outcome.reason_code) == (False, "cancelled by its owner", reason_codes.CANCELLED)
        assert not pid_alive(int(started.external_id))
    finally:
        executor.shutdown(grace=1)


def test_a_program_the_launcher_cannot_execute_fails_to_launch_with_the_reason(tmp_path, settings):
    settings.BATCHES_LOG_DIR = tmp_path / "logs"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    executor = executor_in(tmp_path)
    try:
        assert executor.submit([AttemptSpec("j1", "b", 1, "l1", [str(garbage)], 1, 256, 60)]) == []
        (outcome,) = executor.collect_within(10, until=bool)
        assert (outcome.succeeded, outcome.reason_code) == (False, reason_codes.LAUNCH_FAILED)
        assert outcome.reason == f"could not start {garbage}: Exec format error"
        assert executor.active() == {} and executor.free().cpus == 2
        assert not (tmp_path / "work" / "j1.1").exists()
    finally:
        executor.shutdown(grace=1)


def test_a_launcher_holds_none_of_the_workers_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://service:secret@db/batches")
    launchers = Launchers()
    try:
        launched = start(launchers, tmp_path, ["/bin/sleep", "5"], limit_mib=256)
        environ = Path(f"/proc/{parent_of(launched.pid)}/environ").read_bytes()
        assert b"secret" not in environ and b"SECRET_KEY" not in environ
        os.killpg(launched.pid, signal.SIGKILL)
    finally:
        launchers.close()


def test_a_launcher_that_stops_answering_is_killed_and_its_request_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher_module, "ANSWER_SECONDS", 0.5)
    launchers = Launchers()
    try:
        sleeper = start(launchers, tmp_path, ["/bin/sleep", "5"], limit_mib=256)
        launcher = parent_of(sleeper.pid)
        os.kill(launcher, signal.SIGSTOP)  # hung
        read, write = os.pipe()
        stuck = launchers.start(limit=256 * MIB, argv=["/bin/true"], env={}, cwd=tmp_path, out_fd=write, cores=[0], umask=0o077)
        os.close(write)
        os.close(read)
        launchers.pump()
        assert not stuck.answered  # not yet: it has ANSWER_SECONDS
        time.sleep(0.6)
        launchers.pump()
        assert stuck.answered and stuck.lost and stuck.pid is None
        assert "ended before it answered" in str(stuck.error)
        assert sleeper.lost
        wait_for(lambda: not pid_alive(sleeper.pid), timeout=5, message="what it started is killed")  # SIGKILL lands asynchronously
        wait_for(lambda: not pid_alive(launcher), timeout=5, message="the stuck launcher is killed")
    finally:
        launchers.close()


def test_a_launcher_found_dead_when_asked_fails_the_attempt_as_the_services_fault(tmp_path, settings):
    """A launcher that died before anyone noticed: the request cannot be sent. That is
    no more the job's fault than a launcher dying after the request (`LOST`): not
    charged, it runs again. It used to be launch_failed, which uses up an attempt."""
    settings.BATCHES_LOG_DIR = tmp_path / "logs"
    executor = executor_in(tmp_path)
    try:
        executor.submit([AttemptSpec("j1", "b", 1, "l1", ["/bin/sleep", "30"], 1, 256, 60)])
        (started,) = executor.collect_within(10, until=bool)
        launcher = parent_of(int(started.external_id))
        os.kill(launcher, signal.SIGKILL)
        wait_for(lambda: Path(f"/proc/{launcher}/stat").read_text().split(") ")[1].startswith("Z"), timeout=5, message="it is dead")
        (outcome,) = executor.submit([AttemptSpec("j2", "b", 1, "l2", ["/bin/true"], 1, 256, 60)])
        assert (outcome.job_id, outcome.succeeded, outcome.reason_code) == ("j2", False, reason_codes.INTERNAL_ERROR)
        assert not outcome.charged
        assert outcome.reason == "could not start /bin/true: the worker's launcher process could not be reached (Broken pipe)"
        assert executor.active() == {"j1": 1}  # which ends as lost
        (lost,) = executor.collect_within(10, until=bool)
        assert (lost.job_id, lost.reason) == ("j1", LOST)
        assert executor.active() == {} and executor.free().cpus == 2
    finally:
        executor.shutdown(grace=1)


def test_the_fence_guard_holds_none_of_the_workers_descriptors_but_its_pipe():
    """A guard forked while launchers run (a worker that registered again) held the
    worker's end of their sockets: a launcher would not see the worker hang up until
    the guard left too."""
    from jobs.fencing import Fence

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fence = Fence(worker_id="no-such-worker")
    try:

        def guard_fds() -> list[int]:
            return sorted(int(fd) for fd in os.listdir(f"/proc/{fence.pid}/fd"))

        with contextlib.suppress(AssertionError):  # it closes them a moment after the fork
            wait_for(lambda: len(guard_fds()) == 4, timeout=5)
        fds = guard_fds()
        assert len(fds) == 4 and fds[:3] == [0, 1, 2], fds  # and the pipe
        assert ours.fileno() not in fds[3:] and theirs.fileno() not in fds[3:]
    finally:
        fence.close()
        ours.close()
        theirs.close()
