"""The executor interface: what the worker loop needs from a place that runs jobs.

The worker (`jobs.worker`) owns the database side: it claims jobs, records every state
change and attempt, heartbeats its lease and notices cancels. An executor owns the
attempts themselves: it starts many at once, reports when each starts and ends, stops
them by their external ids, adopts the attempts a previous worker left running, and
cleans up after a dead predecessor. It never touches the database, and nothing here
assumes the job runs on the machine of the web server or of the worker: a cluster
backend implements the same methods with sbatch (job arrays), squeue/sacct, scancel and
a shared log directory.

Two class attributes tell the worker how to treat an executor:
- `queues_work`: the executor has a queue and a scheduler of its own (Slurm). The worker
  then hands it every RUNNABLE job that fits its largest job, up to a bound, instead of
  claiming against free cores and memory that the scheduler manages.
- `attempts_survive_worker`: attempts keep running when the worker stops or dies (they
  run elsewhere). The worker then leaves them running when it stops, and the next worker
  of the same executor adopts them; otherwise (local processes) a stopping worker stops
  them and gives their jobs back to the queue.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from jobs.executors.isolation import Isolation
from jobs.logs import read_log_file


@dataclass(frozen=True)
class Capacity:
    cpus: int
    memory_mib: int

    def fits(self, *, cpu: int, memory_mib: int) -> bool:
        return cpu <= self.cpus and memory_mib <= self.memory_mib


@dataclass(frozen=True)
class AttemptSpec:
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
    read_only: tuple[str, ...] = ()  # names of the filesystems mounted read-only
    # The unix account of the batch's owner (accounts.JobAccount), "" without one: a
    # deployment without per-tenant accounts runs every job as BATCHES_JOB_USER.
    run_as: str = ""
    run_as_uid: int | None = None  # its uid as recorded: the name must resolve to it here too

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.attempt)


@dataclass(frozen=True)
class LiveAttempt:
    """An attempt recorded as live in the database, handed to `Executor.adopt`."""

    job_id: str
    attempt: int
    log_id: str
    external_id: str
    timeout_seconds: int
    memory_mib: int
    cpu: int
    running: bool = False  # recorded as started (else still launching or queued)


@dataclass(frozen=True)
class Started:
    """The attempt is running (locally: its process exists; on a cluster: the scheduler
    placed it). `log_offset` is where its section of the job's log begins."""

    job_id: str
    attempt: int
    external_id: str
    node: str = ""
    log_offset: int | None = None


@dataclass(frozen=True)
class Queued:
    """The attempt is in a cluster's own queue, not started: the job shows RUNNABLE with
    the scheduler's `reason` (`Resources`, `Priority`...), or STARTING once `placed` on a
    node that sets it up. Sent when the attempt enters the queue and whenever either
    changes; only executors that `queues_work` send it."""

    job_id: str
    attempt: int
    external_id: str
    reason: str = ""
    placed: bool = False
    node: str = ""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. `reason` is empty on success, else a sentence a person can
    act on: `exit code 3`, `killed by signal 9 (SIGKILL)`, `timed out after 5 s`,
    `killed: out of memory (limit 256 MiB)`. `charged` is False when the job is not to
    blame (its worker stopped or lost the database): such an attempt does not use up
    `max_attempts`."""

    job_id: str
    attempt: int
    succeeded: bool
    exit_code: int | None = None
    reason: str = ""
    charged: bool = True


Report = Started | Queued | Outcome


def internal_error(exc: BaseException) -> str:
    """The reason of an attempt that failed inside the service, not in the job."""
    return f"internal error: {type(exc).__name__}: {exc}"[:500]


class LaunchError(RuntimeError):
    """The attempt could not be started at all (program missing, not executable...)."""


class Executor(ABC):
    """A place that runs attempts. Methods are called from one thread, the worker loop."""

    kind: ClassVar[str] = ""
    queues_work: ClassVar[bool] = False
    attempts_survive_worker: ClassVar[bool] = False

    worker_id: str = ""
    isolation: Isolation | None = None  # what seals its attempts, where it says

    @abstractmethod
    def capacity(self) -> Capacity:
        """Everything this executor can run at once (a node's cores and memory; for a
        cluster, the largest job it accepts)."""

    @abstractmethod
    def free(self) -> Capacity:
        """What is left now for new attempts."""

    @abstractmethod
    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        """Start the attempts (or hand them to the scheduler in one call). Returns what
        is already known: a Started for each that runs now, an Outcome for each that
        could not be started. The others report later through `poll`. Never raises for
        one bad attempt: that attempt's Outcome says what went wrong."""

    @abstractmethod
    def poll(self, *, timeout: float, wake_fd: int | None = None) -> list[Report]:
        """Wait up to `timeout` seconds (less if `wake_fd` becomes readable) for attempts
        to start or end; return what happened, each report exactly once. An attempt's
        Outcome comes only once it has stopped for good."""

    @abstractmethod
    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str) -> None:
        """Stop these attempts (job id, attempt number), by their external ids, in as few
        calls as the backend allows. Each outcome still comes out of `poll`, with
        `reason`, once the attempt has stopped."""

    @abstractmethod
    def active(self) -> dict[str, int]:
        """Job id -> attempt number of every attempt not yet reported ended."""

    def adopt(self, attempts: list[LiveAttempt]) -> list[Report]:
        """Take over attempts that a stopped or lost worker of this executor left live.
        An executor whose attempts do not survive their worker adopts nothing: each is
        reported ended (the caller has already made sure they are dead)."""
        return [
            Outcome(a.job_id, a.attempt, succeeded=False, reason="worker lost", charged=True)
            for a in attempts  # pragma: no cover - the worker only adopts for surviving executors
        ]

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

    def isolation_report(self) -> dict[str, bool]:
        """Which isolation parts are in force for this executor's attempts (job_user,
        sandbox, cgroup_memory, cgroup_pids, cgroup_cpu); recorded on the worker, shown by
        /readyz. Empty: the executor says nothing of how it isolates attempts."""
        return self.isolation.in_force() if self.isolation is not None else {}

    def isolation_missing(self) -> dict[str, str]:
        """Each isolation part not in force, and why (empty: all are, or none is reported)."""
        return dict(self.isolation.missing) if self.isolation is not None else {}

    def runs_as_root_problem(self, *, accounts_exist: bool) -> str:
        """Why this worker would run jobs as root ("" if it would not). A worker never
        does unless the operator turned isolation off explicitly."""
        return self.isolation.root_problem(accounts_exist=accounts_exist) if self.isolation is not None else ""

    @classmethod
    def check_ready(cls) -> str | None:
        """None when the backend can take work now, else why not (for /readyz): a
        cluster backend asks its controller; the local one needs nothing."""
        return None

    def shutdown(self, *, grace: float) -> list[Outcome]:
        """Stop every active attempt and return their outcomes (worker stopping)."""
        self.cancel(keys=list(self.active().items()), reason="worker stopped")
        outcomes: list[Outcome] = []
        while self.active():
            outcomes.extend(r for r in self.poll(timeout=0.05) if isinstance(r, Outcome))
        return outcomes
