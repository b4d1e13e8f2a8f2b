"""The executor interface: what the worker loop needs from a place that runs jobs.

The worker (`jobs.worker`) owns the database side: it claims jobs, records every state
change through `jobs.states.transition`, heartbeats its lease and notices cancels. An
executor owns the processes: it starts an attempt, reports how attempts ended, stops
them, reads their logs and cleans up after a dead predecessor. It never touches the
database, and nothing here assumes the job runs on the machine of the web server or of
the worker: a Slurm backend implements the same methods with sbatch, squeue/sacct,
scancel and a shared log directory.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.logs import read_log_file


@dataclass(frozen=True)
class Capacity:
    cpus: int
    memory_mib: int

    def fits(self, *, cpu: int, memory_mib: int) -> bool:
        return cpu <= self.cpus and memory_mib <= self.memory_mib


@dataclass(frozen=True)
class Attempt:
    """Everything needed to run one attempt of one job, as plain data (it can be sent to
    another machine). `argv` is final: no shell ever sees it."""

    job_id: str
    batch_id: str
    attempt: int
    log_id: str
    argv: list[str]
    cpu: int
    memory_mib: int
    timeout_seconds: int
    filesystems: dict[str, str] = field(default_factory=dict)  # name -> path on the node

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.attempt)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. `reason` is empty on success, else a sentence a person can
    act on: `exit code 3`, `killed by signal 9 (SIGKILL)`, `timed out after 5 s`,
    `killed: out of memory (limit 256 MiB)`."""

    job_id: str
    attempt: int
    succeeded: bool
    exit_code: int | None = None
    reason: str = ""


class LaunchError(RuntimeError):
    """The attempt could not be started at all (program missing, not executable...)."""


class Executor(ABC):
    """A place that runs attempts. Methods are called from one thread, the worker loop."""

    kind: str = ""

    @abstractmethod
    def capacity(self) -> Capacity:
        """Everything this executor can run at once (a node's cores and memory; for a
        cluster, the largest job it accepts)."""

    @abstractmethod
    def free(self) -> Capacity:
        """What is left now for new attempts."""

    @abstractmethod
    def submit(self, attempt: Attempt) -> None:
        """Start `attempt` (or hand it to the scheduler). Raise LaunchError if it cannot."""

    @abstractmethod
    def poll(self, *, timeout: float) -> list[Outcome]:
        """Wait up to `timeout` seconds for attempts to end; return those that did
        (each exactly once), with their process trees gone."""

    @abstractmethod
    def cancel(self, *, job_id: str, reason: str) -> None:
        """Stop the job's attempt (TERM, a grace period, KILL). Its outcome still comes
        out of `poll`, with `reason`."""

    @abstractmethod
    def active(self) -> dict[str, int]:
        """Job id -> attempt number of every attempt not yet reported by `poll`."""

    @abstractmethod
    def recover(self, *, is_dead: Callable[[str], bool]) -> int:
        """Find attempts left running by workers for which `is_dead(worker_id)` is true
        and stop them for good. Returns how many processes (or jobs) were stopped."""

    @classmethod
    def read_log_of(cls, *, log_id: str, offset: int, limit: int) -> tuple[bytes, int]:
        """The attempt's stdout and stderr from `offset`, and the log's size now. A class
        method: the web server reads logs without starting an executor. The default reads
        the shared log directory, which every backend writes to."""
        return read_log_file(log_id=log_id, offset=offset, limit=limit)

    @classmethod
    def check_ready(cls) -> str | None:
        """None when the backend can take work now, else why not (for /readyz): a
        cluster backend asks its controller; the local one needs nothing."""
        return None

    def shutdown(self, *, grace: float) -> list[Outcome]:
        """Stop every active attempt and return their outcomes (worker stopping)."""
        for job_id in list(self.active()):
            self.cancel(job_id=job_id, reason="worker stopped")
        outcomes: list[Outcome] = []
        while self.active():
            outcomes.extend(self.poll(timeout=0.05))
        return outcomes
