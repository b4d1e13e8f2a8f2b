"""What a cluster executor (`jobs.executors.cluster`) asks of its scheduler, and what it
gets back: each task's state in Slurm's vocabulary, and the two ways a command fails.
An adapter (`SlurmCommands`; the tests' fake scheduler) implements `Scheduler`."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class SchedulerUnavailable(RuntimeError):
    """A command could not reach the scheduler (or is missing, or timed out): nothing is
    known about what it would have done."""


class SchedulerRefused(RuntimeError):
    """The scheduler answered and refused (an invalid partition or account...)."""


@dataclass(frozen=True)
class TaskState:
    """One array task as the scheduler shows it."""

    array_id: str
    index: int
    state: str  # PENDING, CONFIGURING, RUNNING, COMPLETING, COMPLETED, FAILED, TIMEOUT...
    reason: str  # why it waits (Resources, Priority...), or why it ended
    nodes: str
    name: str

    @property
    def external_id(self) -> str:
        return f"{self.array_id}_{self.index}"


class Scheduler(Protocol):
    """What a cluster executor asks its scheduler (SlurmCommands; the fake scheduler)."""

    def tasks(self, *, names: Iterable[str]) -> list[TaskState]: ...
    def cancel(self, *, external_ids: Sequence[str]) -> None: ...
    def signal_batch(self, *, external_ids: Sequence[str]) -> None: ...
    def ping(self) -> None: ...
