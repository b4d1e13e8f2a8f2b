"""Each change of a cluster task reported once: what was last shown of a task
(`Task.shown`: "", "queued:<reason>", "placed", "running") and the report a new state
makes, if any. An end is the executor's (`ClusterExecutor._end`): it forgets the task."""

from collections.abc import Iterable

from jobs.executors.base import Queued, Report, Started
from jobs.executors.cluster_folders import Task
from jobs.executors.cluster_scheduler import Phase, TaskState


def waiting(tasks: Iterable[Task], reason: str) -> list[Report]:
    """`Queued` with `reason` for each of `tasks` not running and not shown so."""
    reports: list[Report] = []
    for task in tasks:
        if task.shown not in ("running", f"queued:{reason}"):
            task.shown = f"queued:{reason}"
            reports.append(Queued(task.job_id, task.attempt, external_id=task.external_id, reason=reason))
    return reports


def started(task: Task, *, node: str) -> Started:
    """The task's start, with what its node wrote (`node` when it wrote none)."""
    task.shown = "running"
    start = task.status("start") or {}
    return Started(
        task.job_id,
        task.attempt,
        external_id=task.external_id,
        node=start.get("node") or node,
        log_offset=start.get("log_offset"),
        time=start.get("time"),
    )


def progress(task: Task, state: TaskState) -> list[Report]:
    """What a task not ended (waiting, placed, running: `state`) has newly reached."""
    if state.phase is Phase.WAITING:
        reason = state.reason or "waiting for the scheduler"
        if task.shown != f"queued:{reason}" and task.shown not in ("placed", "running"):
            task.shown = f"queued:{reason}"
            return [Queued(task.job_id, task.attempt, external_id=task.external_id, reason=reason)]
    elif state.phase is Phase.PLACED:
        if task.shown not in ("placed", "running"):
            task.shown = "placed"
            return [Queued(task.job_id, task.attempt, external_id=task.external_id, placed=True, node=state.nodes)]
    elif state.phase is Phase.RUNNING and task.shown != "running":
        return [started(task, node=state.nodes)]
    return []
