"""Linux process helpers for the local executor: process groups, /proc scans, names
of signals. Every job runs as the leader of its own session and process group, and
carries BATCH_JOB_ID / BATCH_WORKER_ID in its environment, which its descendants
inherit: the group is how a job's tree is stopped, the environment is how leftovers
of a dead worker are found again."""

import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")


def boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> str:
    """Start time of `pid` in clock ticks since boot ('' if it is gone): with the pid,
    it names one process even after the pid is reused."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]


def process_alive(pid: int, start_time: str) -> bool:
    """The process `pid` that started at `start_time` still exists (and is no zombie)."""
    if not pid:
        return False
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] != "Z" and (not start_time or fields[19] == start_time)


def group_alive(pgid: int) -> bool:
    """Some process of group `pgid` is still running (zombies do not count: an orphan
    waiting for init to reap it uses no resources and cannot be killed)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(pgrp == pgid and state != "Z" for _, state, pgrp in _stats())


def group_members(pgid: int) -> list[int]:
    """The live processes of group `pgid`."""
    return [pid for pid, state, pgrp in _stats() if pgrp == pgid and state != "Z"]


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stats() -> list[tuple[int, str, int]]:
    out = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out.append((int(entry.name), fields[0], int(fields[2])))
    return out


def processes_with_env(name: str) -> dict[int, str]:
    """pid -> value of the environment variable `name`, for every process that has it
    (in the environment it was started with)."""
    prefix = name.encode() + b"="
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                found[int(entry.name)] = item[len(prefix) :].decode(errors="replace")
                break
    return found


def kill_processes(pids: list[int]) -> int:
    """SIGKILL each pid and its process group; returns how many were signalled."""
    killed = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            pgid = os.getpgid(pid)
            if pgid != os.getpgrp():
                signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
