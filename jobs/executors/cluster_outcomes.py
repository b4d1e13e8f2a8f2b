"""What a cluster task's exit-status file says about its end, whatever the scheduler:
the job script's own verdicts (a cancel asked for, the batch's timeout, the log cap) and
the program's (its exit code or signal, a launch that failed); and the `Outcome` an
ended task is reported as. What a scheduler's own states add (a time limit, memory, a
node lost) is its adapter's: Slurm's `slurm_outcomes`. Pure functions."""

from dataclasses import dataclass

from core import reason_codes
from jobs.executors import task_spec
from jobs.executors.attempt_logs import human_size
from jobs.executors.base import Outcome
from jobs.executors.cluster_folders import Task
from jobs.executors.procs import signal_name
from jobs.executors.usage import Usage


@dataclass(frozen=True)
class End:
    succeeded: bool
    exit_code: int | None
    reason: str
    reason_code: str = ""
    signal: int | None = None  # the signal that killed the program, as the task saw it


SUCCEEDED = End(True, 0, "", reason_codes.SUCCEEDED)


def failed(status: dict, reason: str, reason_code: str, *, with_exit_code: bool = True) -> End:
    """A failed end, with the exit code (unless `with_exit_code` is false) and the signal
    that the file `status` holds."""
    code = status.get("code")
    exit_code = code if with_exit_code and isinstance(code, int) and code >= 0 else None
    number = status.get("signal") if isinstance(status.get("signal"), int) else None
    return End(False, exit_code, reason, reason_code, number)


def ended_by_task(*, status: dict, timeout: int, cancel_reason: str) -> End | None:
    """An end the service asked for or the job script decided: a cancel, the batch's
    timeout, the log over its cap. None: none of them."""
    if cancel_reason:
        return failed(status, cancel_reason, reason_codes.CANCELLED)
    if status.get("timed_out"):
        return failed(status, f"timed out after {timeout} s", reason_codes.TIMEOUT)
    if status.get("log_over"):
        return failed(status, f"log over {human_size(int(status['log_over']))}", reason_codes.LOG_LIMIT)
    return None


def ended_by_program(*, status: dict, suffix: str = "") -> End | None:
    """What the program's end says: a launch or task error, its exit code, the signal
    that killed it (each reason ends with `suffix`, the scheduler's word). None: the
    file says none of them."""
    if status.get("error"):
        launch = status.get("error_kind") == "launch"
        code = reason_codes.LAUNCH_FAILED if launch else reason_codes.INTERNAL_ERROR
        return failed(status, f"{status['error']}{suffix}", code, with_exit_code=False)
    code = status.get("code")
    if code == 0:
        return SUCCEEDED
    if isinstance(code, int):
        return failed(status, f"exit code {code}{suffix}", reason_codes.EXIT_CODE)
    number = status.get("signal")
    if isinstance(number, int):
        return failed(status, f"killed by signal {number} ({signal_name(number)}){suffix}", reason_codes.SIGNAL, with_exit_code=False)
    return None


def described_by_files(*, status: dict | None, timeout: int, cancel_reason: str, scheduler_name: str) -> End:
    """The end of a task told by its exit-status file alone: for a scheduler whose
    states say nothing of why a task ended."""
    status = status or {}
    told = ended_by_task(status=status, timeout=timeout, cancel_reason=cancel_reason) or ended_by_program(status=status)
    if told is not None:
        return told
    reason = f"{scheduler_name} no longer reports this job and it left no exit status (node failure?)"
    return failed(status, reason, reason_codes.NODE_FAILURE, with_exit_code=False)


def outcome(task: Task, end: End, *, status: dict | None, runs_tasks: bool) -> Outcome:
    """The Outcome of `task`: `end`, with what the node measured (`status`) and, for a
    task's runner (`runs_tasks`), the results it wrote."""
    status = status or {}
    reported = Outcome(
        task.job_id,
        task.attempt,
        succeeded=end.succeeded,
        exit_code=end.exit_code,
        reason=end.reason,
        reason_code=end.reason_code,
        signal=end.signal,
        usage=Usage.from_status(status),
        time=status.get("ended_at"),
    )
    results = task_spec.read_results(task_spec.cluster_results(task.submission.folder, task.index)) if runs_tasks else None
    return task_spec.task_outcome(reported, results=results) if results is not None else reported
