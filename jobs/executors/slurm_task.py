#!/usr/bin/env python3
"""One task of a submission to Slurm: the job script that `sbatch` runs on a node.

    slurm_task.py SUBMISSION_DIR        (the task's index is $SLURM_ARRAY_TASK_ID)

Standard library only, and nothing of the project is imported: the node needs a Python 3
and the shared filesystem, not the service's virtualenv. Everything the task runs comes
from `<dir>/<index>.json`, written by the worker (`jobs.executors.slurm`): the argv (a
list, run without a shell: argument values are never interpreted), the environment,
the log file, the attempt number and the timeout. The task:

- writes `status/<index>.start` (JSON: node, log offset, time) when it begins, so the worker learns
  of the start without asking the controller;
- appends the program's stdout and stderr to the job's log through a pipe it drains,
  up to the cap (`log_max_bytes`): past it the program is stopped and the status says
  `log_over` (the program never holds the log file, so it cannot preallocate disk);
- runs the program in a process group of its own, in bubblewrap when the worker sealed
  the task (`sandboxed`: the argv is the sandbox's, with a working directory of its
  own inside), else in a working directory of its own on the node, removed at the end;
- stops it at the batch's timeout, or when told to (SIGTERM from `scancel --batch`,
  Slurm's time limit): SIGTERM to the program's processes (never to bubblewrap, which
  would take the sandbox down at once), `grace` seconds, then SIGKILL; Slurm's time limit
  is minutes, and comes later as a backstop;
- writes `status/<index>.exit` (JSON: code, signal, timed_out, log_over, error,
  error_kind, usage, ended_at) when it ends, so the outcome is known even after the
  controller has forgotten the job; then exits with the program's status, so Slurm's
  own state (COMPLETED, FAILED) matches. `usage` is what the program used, measured
  here: the script is the reaper of the task's orphans, so once every process of it is
  reaped `getrusage(RUSAGE_CHILDREN)` gives their peak RSS and cpu time (bubblewrap's
  own init included, which waited for the program); the elapsed time runs from the
  spawn to the reap of the program. The kernel counts in that peak the image the
  program was started from (this script's), so a peak not above this script's own is
  written as null.

Both status files are written to a temporary name and renamed: a reader never sees half.
"""

import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL, unless the task says
READ_SIZE = 1 << 16
_stop_requested: list[int] = []


def write_atomic(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def terminate(child: subprocess.Popen, *, sandboxed: bool) -> None:
    """SIGTERM the program's processes: in a sandbox, all but bubblewrap itself."""
    if not sandboxed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGTERM)
        return
    for pid in group_members(child.pid):
        if pid != child.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)


def bound_processes(extra: int) -> None:
    """At most `extra` more processes of this account on the node, from now: Slurm sets
    no pids limit, so a fork bomb would otherwise take every pid of the node (other
    tenants', slurmd's). RLIMIT_NPROC counts the account's processes, sandboxed ones too."""
    if extra <= 0 or os.getuid() == 0:
        return
    uid = os.getuid()
    running = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    running += 1
    limit = running + extra
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


SECCOMP_FD = 10  # where the sandbox's argv (the worker's) expects the seccomp filter


def give_seccomp(path: str) -> tuple[int, ...]:
    """The worker's seccomp filter open on SECCOMP_FD for bubblewrap, if it wrote one."""
    if not path:
        return ()
    fd = os.open(path, os.O_RDONLY)
    os.dup2(fd, SECCOMP_FD)
    os.close(fd)
    return (SECCOMP_FD,)


def request_stop(signum: int, frame: object) -> None:
    _stop_requested.append(signum)


def run(task: dict, base: str) -> dict:
    status = {"code": None, "signal": None, "timed_out": False, "log_over": None, "error": "", "error_kind": ""}
    sandboxed = bool(task.get("sandboxed"))
    cap = int(task.get("log_max_bytes") or 0) or None
    grace = float(task.get("grace", KILL_GRACE))
    env = dict(task["env"])
    workdir = None
    if not sandboxed:  # the sandbox has a working directory of its own, in memory
        root = task.get("work_root") or os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 (the node's own)
        os.makedirs(root, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix=f"batches-{task['job_id']}.{task['attempt']}-", dir=root)
        env.update(HOME=workdir, TMPDIR=workdir, BATCH_WORK_DIR=workdir)
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME"):
        if name in os.environ:
            env[name] = os.environ[name]
    signal.signal(signal.SIGTERM, request_stop)
    become_subreaper()
    signal.signal(signal.SIGINT, request_stop)
    bound_processes(int(task.get("max_processes") or 0))
    try:
        with open(task["log"], "ab", buffering=0) as log:
            offset = log.tell()
            start = {"node": socket.gethostname(), "log_offset": offset, "time": time.time()}
            write_atomic(f"{base}.start", json.dumps(start))
            if task["attempt"] > 1:
                log.write(f"--- attempt {task['attempt']} ---\n".encode())
            out, into = os.pipe()
            passed = give_seccomp(task.get("seccomp") or "")
            try:
                spawned = time.monotonic()
                child = subprocess.Popen(  # noqa: S603 (an argv list, never a shell)
                    task["argv"],
                    stdin=subprocess.DEVNULL,
                    stdout=into,
                    stderr=subprocess.STDOUT,
                    cwd=workdir or "/",
                    env=env,
                    start_new_session=True,
                    umask=0o077,
                    pass_fds=passed,
                )
            except OSError as exc:
                status["error"] = f"could not start {task['argv'][0]}: {exc.strerror or exc}"
                status["error_kind"] = "launch"
                log.write(f"{status['error']}\n".encode())
                return status
            finally:
                os.close(into)
            floor = own_peak_rss_bytes()
            follow(child, out, log, status, task=task, cap=cap, grace=grace, sandboxed=sandboxed, spawned=spawned)
            measure(status, floor=floor)
            code = child.returncode
            if sandboxed and code > 128 and code - 128 < signal.NSIG:
                code = -(code - 128)  # bubblewrap exits 128+N when its program was killed by signal N
            if code < 0:
                status["signal"] = -code
            else:
                status["code"] = code
            return status
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def follow(
    child: subprocess.Popen,
    out: int,
    log: object,
    status: dict,
    *,
    task: dict,
    cap: int | None,
    grace: float,
    sandboxed: bool,
    spawned: float,
) -> None:
    """Drain the program's output into the log until it ends; stop it at the timeout,
    when told to, or past the log cap."""
    deadline = time.monotonic() + float(task["timeout"])
    written, term_at, killed, open_pipe, closed_at = 0, None, False, True, 0.0
    while True:
        now = time.monotonic()
        if term_at is None and (_stop_requested or now >= deadline or status["log_over"]):
            status["timed_out"] = not _stop_requested and not status["log_over"] and now >= deadline
            term_at = now
            terminate(child, sandboxed=sandboxed)
        elif term_at is not None and not killed and now >= term_at + grace:
            killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        if open_pipe:
            readable, _, _ = select.select([out], [], [], 0.2)
            if readable:
                chunk = os.read(out, READ_SIZE)
                if not chunk:
                    open_pipe, closed_at = False, time.monotonic()
                    os.close(out)
                elif status["log_over"] is None:
                    if cap is not None and written + len(chunk) > cap:
                        chunk = chunk[: cap - written]
                        status["log_over"] = cap
                    log.write(chunk)
                    written += len(chunk)
        elif reap(child, status, spawned) is None:
            # Its output closed: it usually ends a moment later (look often, for its
            # elapsed time), or keeps running without output (look less often).
            time.sleep(0.01 if now - closed_at < 1.0 else 0.1)
        if not open_pipe and reap(child, status, spawned) is not None:
            break
    if status["log_over"]:
        size = f"{cap >> 20} MiB" if cap % (1 << 20) == 0 else f"{cap} bytes"  # as the worker names the cap
        log.write(f"\n--- log cut at {size}: the attempt was stopped ---\n".encode())
    # Whatever the program left behind in its group goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def own_peak_rss_bytes() -> int | None:
    """This process's peak resident memory (VmHWM), None where /proc does not say."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reap(child: subprocess.Popen, status: dict, spawned: float) -> int | None:
    """The program's exit status once it has ended (None before); when it ended, and its
    elapsed time from `spawned` (monotonic) in `status["usage"]`."""
    if child.returncode is not None:
        return child.returncode
    try:
        pid, wait_status, _ = os.wait4(child.pid, os.WNOHANG)
    except ChildProcessError:  # reaped already: no figures
        return child.poll()
    if pid == 0:
        return None
    child.returncode = os.waitstatus_to_exitcode(wait_status)
    status["ended_at"] = time.time()
    status["usage"] = {"max_rss_bytes": None, "cpu_seconds": None, "elapsed_seconds": time.monotonic() - spawned}
    return child.returncode


def become_subreaper() -> bool:
    """Be the reaper of this task's orphans (PR_SET_CHILD_SUBREAPER): what the program
    used reaches `getrusage(RUSAGE_CHILDREN)` only through the processes that waited
    for it, and bubblewrap exits without waiting for the init of its PID namespace
    (which waited for the program): that init comes back here to be reaped."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def measure(status: dict, *, floor: int | None, wait: float = 2.0) -> None:
    """The program's peak RSS and cpu time into `status["usage"]`, once every process of
    the task is reaped (orphans included, for up to `wait` seconds): getrusage of the
    children. A peak not above `floor` (this script's own peak just after the spawn,
    which the kernel counts in the program's) is null."""
    if "usage" not in status:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            pid, _, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break  # none left
        if pid == 0:
            time.sleep(0.01)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = usage.ru_maxrss * 1024  # Linux gives KiB
    status["usage"]["max_rss_bytes"] = rss if floor is None or rss > floor else None
    status["usage"]["cpu_seconds"] = usage.ru_utime + usage.ru_stime


def main() -> int:
    directory = sys.argv[1]
    index = os.environ.get("SLURM_ARRAY_TASK_ID", "0")
    with open(os.path.join(directory, f"{index}.json")) as handle:
        task = json.load(handle)
    base = os.path.join(directory, "status", index)  # the only folder the task writes in
    try:
        status = run(task, base)
    except Exception as exc:  # the node could not run the task at all: say why
        status = {
            "code": None,
            "signal": None,
            "timed_out": False,
            "log_over": None,
            "error": f"the task failed on {socket.gethostname()}: {exc}",
            "error_kind": "task",
        }
    write_atomic(f"{base}.exit", json.dumps(status))  # in status/, the task's own subfolder
    if status["code"] is not None:
        return min(status["code"], 255)
    return 128 + status["signal"] if status["signal"] else 1


if __name__ == "__main__":
    sys.exit(main())
