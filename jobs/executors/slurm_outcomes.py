"""What a Slurm task's state and its exit-status file mean for the job: which of our
states it is in, and how an ended task is told to a person. Pure functions."""

from dataclasses import dataclass

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

_WHY = {
    "TIMEOUT": "killed at Slurm's time limit",
    "NODE_FAIL": "node failure",
    "PREEMPTED": "preempted by a job of higher priority",
    "BOOT_FAIL": "the node failed to boot",
    "DEADLINE": "missed its deadline",
    "REVOKED": "revoked by another cluster",
    "CANCELLED": "cancelled in Slurm (not by this service)",
}


@dataclass(frozen=True)
class End:
    succeeded: bool
    exit_code: int | None
    reason: str


def describe_end(*, state: str | None, status: dict | None, timeout: int, memory_mib: int, cancel_reason: str = "") -> End:
    """The end of a task whose Slurm state is `state` (None: the controller no longer
    knows it) and whose exit-status file says `status` (None: it wrote none).

    A cancel asked for by this service says so; then Slurm's verdict on what went wrong
    outside the program (time limit, memory, node, preemption); then the program's own
    status. Every reason names the Slurm state when Slurm knows it."""
    status = status or {}
    code = status.get("code")
    exit_code = code if isinstance(code, int) and code >= 0 else None
    suffix = f" (Slurm: {state})" if state and state != "COMPLETED" else ""
    if cancel_reason:
        return End(False, exit_code, cancel_reason)
    if status.get("timed_out"):
        return End(False, exit_code, f"timed out after {timeout} s")
    if status.get("log_over"):
        return End(False, exit_code, f"log over {human_size(int(status['log_over']))}")
    if state == "OUT_OF_MEMORY":
        return End(False, exit_code, f"killed: out of memory (limit {memory_mib} MiB){suffix}")
    if state == "TIMEOUT":
        return End(False, exit_code, f"timed out after {timeout} s: {_WHY[state]}{suffix}")
    if state in _WHY:
        return End(False, exit_code, f"{_WHY[state]}{suffix}")
    if status.get("error"):
        return End(False, None, f"{status['error']}{suffix}")
    if code == 0:
        return End(True, 0, "")
    if isinstance(code, int):
        return End(False, exit_code, f"exit code {code}{suffix}")
    number = status.get("signal")
    if isinstance(number, int):
        return End(False, None, f"killed by signal {number} ({signal_name(number)}){suffix}")
    if state == "COMPLETED":
        return End(True, 0, "")
    if state:
        return End(False, None, f"the job script failed before running the command{suffix}")
    return End(False, None, "Slurm no longer reports this job and it left no exit status (node failure?)")
