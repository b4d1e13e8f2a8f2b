"""How a local attempt ended, told to a person and to a program, and what it used.
A pure function of what the local executor saw (`LocalEnd`), so each case is tested
without a process."""

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass

from core import reason_codes
from jobs.executors.base import Outcome
from jobs.executors.launcher import Launched
from jobs.executors.procs import signal_name
from jobs.executors.usage import Usage, rusage_figures


@dataclass(frozen=True)
class LocalEnd:
    """What the local executor knows of an ended attempt."""

    job_id: str
    attempt: int
    memory_mib: int
    returncode: int | None  # Popen's: negative for a signal
    sandboxed: bool  # run in bubblewrap, which exits 128+N for its program's signal N
    stop_reason: str = ""  # why the executor stopped it ("" if it ended by itself)
    stop_code: str = ""  # that reason's code
    out_of_memory: bool = False  # its cgroup saw the kernel's OOM killer
    log_says_out_of_memory: bool = False  # no cgroup, and the log says so (MemoryError...)
    rusage: resource.struct_rusage | None = None  # wait4's, of its leader
    rss_floor_bytes: int | None = None  # the worker's peak RSS just after the spawn (see usage)
    cgroup_peak_bytes: int | None = None  # its cgroup's memory peak
    cgroup_cpu_seconds: float | None = None  # its cgroup's cpu time
    elapsed_seconds: float | None = None  # from the spawn to the reap
    ended_at: float | None = None  # epoch seconds of the reap


def usage_of(end: LocalEnd) -> Usage:
    """The cgroup's figures where it has them (every process of the attempt, whoever
    reaped it), else wait4's of the leader (and the descendants it waited for). In a
    sandbox the leader is bubblewrap, which exits without waiting for the init of its
    PID namespace (the one that waited for the program): its rusage says nothing of the
    program, so without a cgroup a sandboxed attempt's figures are null."""
    rss, cpu = rusage_figures(end.rusage) if end.rusage is not None and not end.sandboxed else (None, None)
    if rss is not None and end.rss_floor_bytes is not None and rss <= end.rss_floor_bytes:
        rss = None  # no more than the image it was started from: its own peak is unknown
    return Usage.measured(
        max_rss_bytes=end.cgroup_peak_bytes if end.cgroup_peak_bytes is not None else rss,
        cpu_seconds=end.cgroup_cpu_seconds if end.cgroup_cpu_seconds is not None else cpu,
        elapsed_seconds=end.elapsed_seconds,
    )


def describe(end: LocalEnd) -> Outcome:
    """The attempt's Outcome: the kernel's OOM kill first (the job failed, whatever its
    main process made of it), then a stop the executor asked for (cancel, timeout, log
    cap), then the program's own status."""
    code = end.returncode
    if end.sandboxed and code is not None and code > 128 and code - 128 < signal.NSIG:
        code = -(code - 128)  # bwrap exits 128+N when its child was killed by signal N
    exit_code = code if code is not None and code >= 0 else None
    number = -code if code is not None and code < 0 else None
    common = {"exit_code": exit_code, "signal": number, "usage": usage_of(end), "time": end.ended_at}
    limit = f"limit {end.memory_mib} MiB"
    if end.out_of_memory:
        reason = f"killed: out of memory ({limit})"
        return Outcome(end.job_id, end.attempt, succeeded=False, reason=reason, reason_code=reason_codes.OUT_OF_MEMORY, **common)
    if end.stop_reason:
        return Outcome(end.job_id, end.attempt, succeeded=False, reason=end.stop_reason, reason_code=end.stop_code, **common)
    if code == 0:
        return Outcome(end.job_id, end.attempt, succeeded=True, reason_code=reason_codes.SUCCEEDED, **common)
    if code is None:  # never seen to end (given up on)
        return Outcome(end.job_id, end.attempt, succeeded=False, reason="ended unseen", reason_code=reason_codes.INTERNAL_ERROR, **common)
    if end.log_says_out_of_memory:
        reason = f"killed: out of memory ({limit})" if code < 0 else f"out of memory ({limit}): exit code {code}"
        return Outcome(end.job_id, end.attempt, succeeded=False, reason=reason, reason_code=reason_codes.OUT_OF_MEMORY, **common)
    if code > 0:
        return Outcome(end.job_id, end.attempt, succeeded=False, reason=f"exit code {code}", reason_code=reason_codes.EXIT_CODE, **common)
    reason = f"killed by signal {-code} ({signal_name(-code)})"
    return Outcome(end.job_id, end.attempt, succeeded=False, reason=reason, reason_code=reason_codes.SIGNAL, **common)


def reap(popen: subprocess.Popen | Launched) -> tuple[int, resource.struct_rusage | None, float | None, float | None] | None:
    """None while the attempt's leader runs; once it has ended, reaped with `wait4` for
    what it used: (its status as Popen gives it, -N for signal N; its rusage; when it
    was reaped, monotonic and epoch seconds). A launcher's child was reaped by its
    launcher, which reported the same (`jobs.executors.launcher`)."""
    if isinstance(popen, Launched):
        return None if popen.returncode is None else (popen.returncode, popen.rusage, popen.ended, popen.ended_wall)
    try:
        pid, status, rusage = os.wait4(popen.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere already: no figures
        code = popen.poll()
        return None if code is None else (code, None, None, None)
    if pid == 0:
        return None
    popen.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    return popen.returncode, rusage, time.monotonic(), time.time()
