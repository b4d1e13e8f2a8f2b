"""What a cluster executor (`jobs.executors.cluster`) asks of its scheduler, and what it
gets back: each task's state, in the scheduler's own words and as a `Phase` the
executor acts on; what an ended task's state means (`describe_end`); and the two ways a
command fails. An adapter (`SlurmCommands`; the tests' fake scheduler) implements
`Scheduler`: what a scheduler's states mean is the adapter's, never the executor's."""

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from jobs.executors.cluster_outcomes import End


class SchedulerUnavailable(RuntimeError):
    """A command could not reach the scheduler (or is missing, or timed out): nothing is
    known about what it would have done."""


class SchedulerRefused(RuntimeError):
    """The scheduler answered and refused (an invalid partition or account...)."""


class Phase(enum.Enum):
    """Where a task is, as the executor reports it."""

    WAITING = "waiting"  # in the queue: the job is RUNNABLE, the state's reason says why
    PLACED = "placed"  # on a node that sets it up: STARTING
    RUNNING = "running"  # running (or being cleaned up, or paused by an operator): RUNNING
    COMPLETED = "completed"  # ended, and the scheduler says its script succeeded
    ENDED = "ended"  # ended otherwise, for good
    UNKNOWN = "unknown"  # a state the adapter does not know: nothing is reported


@dataclass(frozen=True)
class TaskState:
    """One array task as the scheduler shows it."""

    array_id: str
    index: int
    state: str  # the scheduler's word: Slurm's PENDING, CONFIGURING, RUNNING, COMPLETED, FAILED, TIMEOUT...
    phase: Phase  # what `state` means, told by the adapter
    reason: str  # why it waits (Resources, Priority...), or why it ended
    nodes: str
    name: str

    @property
    def external_id(self) -> str:
        return f"{self.array_id}_{self.index}"


class Scheduler(Protocol):
    """What a cluster executor asks its scheduler (SlurmCommands; the fake scheduler).
    The commands raise SchedulerUnavailable or SchedulerRefused."""

    def tasks(self, *, names: Iterable[str]) -> list[TaskState]: ...
    def cancel(self, *, external_ids: Sequence[str]) -> None: ...
    def signal_batch(self, *, external_ids: Sequence[str]) -> None: ...
    def ping(self) -> None: ...

    def describe_end(self, *, state: str | None, status: dict | None, timeout: int, memory_mib: int, cancel_reason: str) -> End:
        """The end of a task whose state is `state` (None: the scheduler no longer
        knows it, or has not said) and whose exit-status file says `status` (None: it
        wrote none). `jobs.executors.cluster_outcomes` tells what the file says."""
        ...

    def state_after_exit(self, *, code: int | None) -> str | None:
        """The state the scheduler gives a task whose job script exited with `code`
        (its program's status): an end read from the files before the scheduler has
        said is told as the scheduler will (None: no state to name)."""
        ...
