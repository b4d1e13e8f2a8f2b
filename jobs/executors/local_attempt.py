"""One attempt as the local executor follows it (`jobs.executors.local`): its process,
output, deadline and stop, and its place in a slot when it was held behind another.

Holding (`LocalExecutor.hold`, the `Holds` capability): while short jobs stream through,
the next attempt of a slot is handed to the launcher of the attempt running in it,
which starts it the moment that one is reaped, on its cores, without waiting for the
worker loop to see the end and ask. The held attempt uses nothing until then: the slot
(cores and memory, counted once) passes to it when its predecessor is done with it. One
whose predecessor runs on past HOLD_SECONDS is asked back and returns to the worker's
queue.
"""

import contextlib
import os
import resource
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from jobs.executors import attempt_logs
from jobs.executors.attempt_output import AttemptOutput
from jobs.executors.base import AttemptSpec
from jobs.executors.cgroups import AttemptCgroup
from jobs.executors.launcher import Launched, LauncherGone
from jobs.executors.local_outcomes import LocalEnd
from jobs.executors.procs import group_members, signal_group

# How long an attempt may have run and still get the next one held behind it; one held
# behind an attempt that runs on past it is asked back. Holding saves the loop's latency
# between an end and the next start, a millisecond or two: it matters only for jobs
# about that short, and a longer job must not keep the next one waiting.
HOLD_SECONDS = 0.05


@dataclass
class LocalAttempt:
    attempt: AttemptSpec
    popen: subprocess.Popen | Launched
    cores: list[int]
    workdir: Path
    output: AttemptOutput
    deadline: float
    pidfd: int | None
    returncode: int | None = None
    stop_reason: str = ""
    term_at: float | None = None
    killed: bool = False
    cgroup: AttemptCgroup | None = None
    stop_code: str = ""  # core.reason_codes, of stop_reason
    spawned: float = 0.0  # monotonic, at the spawn (asked of a launcher: until it answers, when asked)
    ended: float | None = None  # monotonic, when its leader was reaped
    ended_wall: float | None = None  # the same, epoch seconds
    rusage: resource.struct_rusage | None = None  # wait4's, of its leader
    rss_floor: int | None = None  # the worker's peak RSS just after the spawn (jobs.executors.usage)
    announced: bool = True  # its Started was reported (a launcher's answer comes later)
    spawned_wall: float = 0.0
    after: "LocalAttempt | None" = None  # held behind it, until its slot passes to this one
    successor: "LocalAttempt | None" = None  # the one held behind it
    owns_slot: bool = True  # its cores and memory are counted as used (a held one's are not yet)
    withdrawing: bool = False  # its launcher was asked to give it back

    @property
    def pgid(self) -> int | None:
        return self.popen.pid  # None until its launcher has answered

    # -- stopping -------------------------------------------------------------------
    def terminate(self, now: float, *, sandboxed: bool, grace: float) -> None:
        """SIGTERM to what is left of it (in a sandbox, to the job's processes, not to
        bubblewrap, which would die of it and take the job with it at once); SIGKILL
        after `grace` (`kill`, by the executor's collect)."""
        if self.term_at is not None:
            return
        self.term_at = now
        if self.pgid is None:  # its launcher has not answered yet: signalled then
            return
        if not sandboxed:
            signal_group(self.pgid, signal.SIGTERM)
            if self.cgroup is not None:
                self.cgroup.signal_all(signal.SIGTERM)
        elif self.cgroup is not None:
            self.cgroup.signal_all(signal.SIGTERM, but=self.pgid)
        else:
            for pid in group_members(self.pgid):
                if pid != self.pgid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
        if grace <= 0:
            self.kill()

    def kill(self) -> None:
        self.killed = True
        if self.pgid is None:  # its launcher has not answered yet: killed then
            return
        signal_group(self.pgid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.signal_all(signal.SIGKILL)

    def end(self, *, sandboxed: bool, log_path: Path) -> LocalEnd:
        """What was seen of it, once it has ended (its leader reaped, its group gone)."""
        cgroup, code = self.cgroup, self.returncode
        says_oom = (
            cgroup is None
            and not self.stop_reason
            and code not in (0, None)
            and attempt_logs.says_out_of_memory(path=log_path, start=self.output.start)
        )
        return LocalEnd(
            job_id=self.attempt.job_id,
            attempt=self.attempt.attempt,
            memory_mib=self.attempt.memory_mib,
            returncode=code,
            sandboxed=sandboxed,
            stop_reason=self.stop_reason,
            stop_code=self.stop_code,
            out_of_memory=cgroup is not None and cgroup.out_of_memory(),
            log_says_out_of_memory=says_oom,
            rusage=self.rusage,
            rss_floor_bytes=self.rss_floor,
            cgroup_peak_bytes=cgroup.memory_peak_bytes() if cgroup is not None else None,
            cgroup_cpu_seconds=cgroup.cpu_seconds() if cgroup is not None else None,
            elapsed_seconds=self.ended - self.spawned if self.ended is not None else None,
            ended_at=self.ended_wall,
        )

    # -- holding --------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """Held behind another, and its launcher has not said yet whether it started."""
        return self.after is not None and not self.popen.answered

    def ask_back_at(self) -> float | None:
        """When to ask a held attempt back (monotonic), None if it need not be: it is
        being asked already, or its predecessor has ended (it starts now, if it has not)."""
        if not self.held or self.withdrawing or self.after.returncode is not None:
            return None
        return self.after.spawned + HOLD_SECONDS

    def ask_back(self) -> None:
        """Ask its launcher to give it back (unless it has started it already: that
        answer comes first)."""
        self.withdrawing = True
        with contextlib.suppress(LauncherGone):  # then it ends as lost, through collect
            self.popen.launcher.withdraw(self.popen)

    def leave_slot(self) -> bool:
        """It is done with its slot: True when the slot's cores and memory are free
        again; False when it never had one, or when the slot passes to the attempt held
        behind it (still to start, or started)."""
        if self.after is not None:  # held, never given a slot
            self.after.successor = None
            self.after = None
        successor, self.successor = self.successor, None
        if not self.owns_slot:
            return False
        self.owns_slot = False
        if successor is not None and not (successor.popen.answered and successor.popen.pid is None):  # not failed, not given back
            successor.after, successor.owns_slot = None, True
            return False
        return True


def to_hold_behind(attempts: Iterable[LocalAttempt], spec: AttemptSpec, now: float) -> LocalAttempt | None:
    """The attempt `spec` may be held behind: the oldest of those of its cores and memory
    that a launcher started (or is starting) less than HOLD_SECONDS ago, that run on,
    are not being stopped and have none held behind them yet."""
    best = None
    for run in attempts:
        if (
            isinstance(run.popen, Launched)
            and run.owns_slot
            and run.successor is None
            and run.returncode is None
            and not run.stop_reason
            and run.popen.error is None
            and now - run.spawned < HOLD_SECONDS
            and run.attempt.cpu == spec.cpu
            and run.attempt.memory_mib == spec.memory_mib
            and (best is None or run.spawned < best.spawned)
        ):
            best = run
    return best


def could_not_start(attempt: AttemptSpec, exc: OSError) -> str:
    return f"could not start {attempt.argv[0] if attempt.argv else 'the task runner'}: {exc.strerror or exc}"
