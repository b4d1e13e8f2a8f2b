"""What a Slurm task's state means for the job: which phase it is in (`phase`), and how
an ended task is told to a person (`describe_end`: Slurm's verdicts on what went wrong
outside the program, around what the exit-status file says, `cluster_outcomes`). Pure
functions; `SlurmCommands` answers the cluster executor with them."""

from core import reason_codes
from jobs.executors.cluster_outcomes import SUCCEEDED, End, ended_by_program, ended_by_task, failed
from jobs.executors.cluster_scheduler import Phase

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


def phase(state: str) -> Phase:
    """The phase of a task squeue shows in `state`."""
    if state in WAITING:
        return Phase.WAITING
    if state in PLACED:
        return Phase.PLACED
    if state in RUNNING:
        return Phase.RUNNING
    if state == "COMPLETED":
        return Phase.COMPLETED
    return Phase.ENDED if state in ENDED else Phase.UNKNOWN


def state_after_exit(*, code: int | None) -> str | None:
    """The task script exits with its program's status: Slurm's state is then FAILED."""
    return "FAILED" if isinstance(code, int) and code > 0 else None


def describe_end(*, state: str | None, status: dict | None, timeout: int, memory_mib: int, cancel_reason: str = "") -> End:
    """The end of a task whose Slurm state is `state` (None: the controller no longer
    knows it) and whose exit-status file says `status` (None: it wrote none).

    A cancel asked for by this service says so; then Slurm's verdict on what went wrong
    outside the program (time limit, memory, node, preemption); then the program's own
    status. Every reason names the Slurm state when Slurm knows it."""
    status = status or {}
    suffix = f" (Slurm: {state})" if state and state != "COMPLETED" else ""
    told = ended_by_task(status=status, timeout=timeout, cancel_reason=cancel_reason)
    if told is not None:
        return told
    if state == "OUT_OF_MEMORY":
        return failed(status, f"killed: out of memory (limit {memory_mib} MiB){suffix}", reason_codes.OUT_OF_MEMORY)
    if state == "TIMEOUT":
        return failed(status, f"timed out after {timeout} s: {_WHY[state][0]}{suffix}", reason_codes.TIMEOUT)
    if state in _WHY:
        return failed(status, f"{_WHY[state][0]}{suffix}", _WHY[state][1])
    told = ended_by_program(status=status, suffix=suffix)
    if told is not None:
        return told
    if state == "COMPLETED":
        return SUCCEEDED
    if state:
        return failed(
            status, f"the job script failed before running the command{suffix}", reason_codes.INTERNAL_ERROR, with_exit_code=False
        )
    reason = "Slurm no longer reports this job and it left no exit status (node failure?)"
    return failed(status, reason, reason_codes.NODE_FAILURE, with_exit_code=False)
