"""What a Slurm task's state and its exit-status file mean for the job: which of our
states it is in, and how an ended task is told to a person. Pure functions."""

from dataclasses import dataclass

from core import reason_codes
from jobs.executors.attempt_logs import human_size
from jobs.executors.procs import signal_name

# Waiting in the queue: the job is RUNNABLE, `reason` says why (Resources, Priority...).
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
# Placed on a node that sets it up: STARTING.
PLACED = frozenset({"CONFIGURING"})
# Running (or being cleaned up, or paused by an operator): RUNNING.
RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING"})
# Ended for good.
ENDED = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
)

# Ended by Slurm, outside the program: what it means, and its reason code.
_WHY = {
    "TIMEOUT": ("killed at Slurm's time limit", reason_codes.TIMEOUT),
    "NODE_FAIL": ("node failure", reason_codes.NODE_FAILURE),
    "PREEMPTED": ("preempted by a job of higher priority", reason_codes.PREEMPTED),
    "BOOT_FAIL": ("the node failed to boot", reason_codes.BOOT_FAILURE),
    "DEADLINE": ("missed its deadline", reason_codes.TIMEOUT),
    "REVOKED": ("revoked by another cluster", reason_codes.CLUSTER_CANCELLED),
    "CANCELLED": ("cancelled in Slurm (not by this service)", reason_codes.CLUSTER_CANCELLED),
}


@dataclass(frozen=True)
class End:
    succeeded: bool
    exit_code: int | None
    reason: str
    reason_code: str = ""
    signal: int | None = None  # the signal that killed the program, as the task saw it


def describe_end(*, state: str | None, status: dict | None, timeout: int, memory_mib: int, cancel_reason: str = "") -> End:
    """The end of a task whose Slurm state is `state` (None: the controller no longer
    knows it) and whose exit-status file says `status` (None: it wrote none).

    A cancel asked for by this service says so; then Slurm's verdict on what went wrong
    outside the program (time limit, memory, node, preemption); then the program's own
    status. Every reason names the Slurm state when Slurm knows it."""
    status = status or {}
    code = status.get("code")
    exit_code = code if isinstance(code, int) and code >= 0 else None
    number = status.get("signal") if isinstance(status.get("signal"), int) else None
    suffix = f" (Slurm: {state})" if state and state != "COMPLETED" else ""

    def failed(reason: str, reason_code: str, exit_code: int | None = exit_code) -> End:
        return End(False, exit_code, reason, reason_code, number)

    if cancel_reason:
        return failed(cancel_reason, reason_codes.CANCELLED)
    if status.get("timed_out"):
        return failed(f"timed out after {timeout} s", reason_codes.TIMEOUT)
    if status.get("log_over"):
        return failed(f"log over {human_size(int(status['log_over']))}", reason_codes.LOG_LIMIT)
    if state == "OUT_OF_MEMORY":
        return failed(f"killed: out of memory (limit {memory_mib} MiB){suffix}", reason_codes.OUT_OF_MEMORY)
    if state == "TIMEOUT":
        return failed(f"timed out after {timeout} s: {_WHY[state][0]}{suffix}", reason_codes.TIMEOUT)
    if state in _WHY:
        return failed(f"{_WHY[state][0]}{suffix}", _WHY[state][1])
    if status.get("error"):
        launch = status.get("error_kind") == "launch"
        return failed(f"{status['error']}{suffix}", reason_codes.LAUNCH_FAILED if launch else reason_codes.INTERNAL_ERROR, None)
    if code == 0:
        return End(True, 0, "", reason_codes.SUCCEEDED)
    if isinstance(code, int):
        return failed(f"exit code {code}{suffix}", reason_codes.EXIT_CODE)
    if number is not None:
        return failed(f"killed by signal {number} ({signal_name(number)}){suffix}", reason_codes.SIGNAL, None)
    if state == "COMPLETED":
        return End(True, 0, "", reason_codes.SUCCEEDED)
    if state:
        return failed(f"the job script failed before running the command{suffix}", reason_codes.INTERNAL_ERROR, None)
    reason = "Slurm no longer reports this job and it left no exit status (node failure?)"
    return failed(reason, reason_codes.NODE_FAILURE, None)
