"""The executor interface: what the worker loop needs from a place that runs jobs.

The worker (`jobs.worker`) owns the database side: it claims jobs, records every state
change and attempt, heartbeats its lease and notices cancels. An executor owns the
attempts themselves: it starts many at once, reports when each starts and ends, stops
them by their external ids, adopts the attempts a previous worker left running, and
cleans up after a dead predecessor. It never touches the database, and nothing here
assumes the job runs on the machine of the web server or of the worker: a cluster
backend implements the same methods with sbatch (job arrays), squeue (and exit files its task script writes), scancel and
a shared log directory.

The contract, in full (a backend is one module implementing it, plus its tests):
- construction: `from_settings(*, cpus, memory_mib)` builds it from the settings (the
  only arguments a worker passes); `bind(worker_id)` ties it to its worker row, once;
- `capacity()`, `free()`, `active()`: what it can run, what is left, what runs;
- `submit(specs)`, `cancel(keys, reason, force)`: start and stop attempts;
- waiting belongs to the worker loop: `wake_up()` says what to wait on (descriptors
  that become readable when something happened, and a time after which `collect()` has
  work), the loop waits on those and its own descriptors (`wait`), then `collect()`
  returns what happened without blocking;
- `shutdown(grace)`: stop every attempt within `grace`, then force, then give up;
- `log_store`: where its attempts' logs are kept (read, size, delete);
- class attributes: `kind`, `queues_work`, `attempts_survive_worker`, `isolation`;
- optional capabilities, declared by inheriting their mixin, never stubbed:
  `Adopts` (takes over a lost worker's attempts; required when attempts survive the
  worker), `Recovers` (stops what dead workers left running on this machine), `Probes`
  (can tell /readyz whether the backend takes work now), `Holds` (takes attempts ahead,
  each to start the moment a running one ends).

`queues_work`: the executor has a queue and a scheduler of its own (Slurm). The worker
then hands it every RUNNABLE job that fits its largest job, up to a bound, instead of
claiming against free cores and memory that the scheduler manages; such an executor may
say its free memory is `UNBOUNDED` (it has no figure: the scheduler queues what does
not fit). `attempts_survive_worker`: attempts keep running when the worker stops or dies
(they run elsewhere). The worker then leaves them running when it stops, and the next
worker of the same executor adopts them; otherwise (local processes) a stopping worker
stops them and gives their jobs back to the queue.
"""

import logging
import math
import select
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from core.reason_codes import INFRASTRUCTURE, WORKER_STOPPED
from jobs.executors.isolation import Isolation
from jobs.executors.log_store import LogStore
from jobs.executors.usage import Usage

logger = logging.getLogger("jobs.executors")

# A free figure for what a backend does not bound (a cluster's scheduler queues what does
# not fit): large enough never to bind, small enough for plain integer arithmetic.
UNBOUNDED = 1 << 50
# After `shutdown`'s grace and the forced stop, how long to wait for attempts to be
# gone before giving up on them.
FORCE_WAIT = 5.0


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
    # At most this many of the batch's jobs run at once (Batch.max_running; None: no
    # limit). Claims already hold it; a scheduler that queues work holds it too (Slurm's
    # array throttle), so what one submission carries never runs wider than asked.
    max_running: int | None = None
    # A task's steps, inputs and outputs (Batch.task, see jobs.tasks): run by the task
    # runner instead of `argv`; None for a tool's job.
    task: dict[str, Any] | None = None

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
    time: float | None = None  # when it started (epoch seconds); None: when it is recorded


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
    `killed: out of memory (limit 256 MiB)`. `reason_code` is the reason for programs
    (`core.reason_codes`): an infrastructure one means the job is not to blame, and the
    attempt is not charged (jobs.retry_policy); `signal` the signal that killed the
    program; `usage` what it used (`usage`)."""

    job_id: str
    attempt: int
    succeeded: bool
    exit_code: int | None = None
    reason: str = ""
    reason_code: str = ""
    signal: int | None = None
    usage: Usage | None = None
    time: float | None = None  # when it ended (epoch seconds); None: when it is recorded
    task_log: dict[str, Any] | None = None  # a task's: what its runner wrote (jobs.executors.task_runner)

    @property
    def charged(self) -> bool:
        """A failure the job's own (not an infrastructure one): it uses up an attempt."""
        return not self.succeeded and self.reason_code not in INFRASTRUCTURE


@dataclass(frozen=True)
class Returned:
    """The attempt never started and is the worker's again, to start as it starts any
    claimed attempt: it was held to take a running attempt's place (`Holds`), and that
    one ran on, or never started."""

    spec: AttemptSpec


Report = Started | Queued | Outcome | Returned


def internal_error(exc: BaseException) -> str:
    """The reason of an attempt that failed inside the service, not in the job."""
    return f"internal error: {type(exc).__name__}: {exc}"[:500]


class LaunchError(RuntimeError):
    """The attempt could not be started at all (program missing, not executable...)."""


class AlreadyBound(RuntimeError):
    """`Executor.bind` called a second time: an executor serves one worker row."""


@dataclass(frozen=True)
class WakeUp:
    """What the worker loop waits on before it calls `collect()` again: `fds` become
    readable when something happened (an attempt's output or end), and after `within`
    seconds there is work to do anyway (a deadline, a scheduler to ask)."""

    fds: tuple[int, ...] = ()
    within: float = math.inf


def wait(wake: WakeUp, *, timeout: float, fds: Iterable[int] = ()) -> set[int]:
    """Wait up to `timeout` seconds (less if the executor's `wake.within` comes first)
    until one of the executor's or the caller's `fds` is readable; returns the readable
    ones. The one place an executor's worker sleeps."""
    wait_for = max(0.0, min(timeout, wake.within))
    watched = {*wake.fds, *fds}
    if not watched:
        if wait_for > 0:
            time.sleep(wait_for)
        return set()
    poller = select.poll()
    for fd in watched:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(wait_for * 1000)}


class Executor(ABC):
    """A place that runs attempts. Methods are called from one thread, the worker loop,
    and never use the database (the loop calls them while its writes are in flight,
    `jobs.db_writer`).

    Construct with `from_settings` (or the backend's keyword-only constructor, tests
    do), then `bind` it to its worker once before submitting anything."""

    kind: ClassVar[str] = ""
    queues_work: ClassVar[bool] = False
    attempts_survive_worker: ClassVar[bool] = False
    # Where its attempts' logs are (read by the web server, deleted with their batch).
    log_store: ClassVar[LogStore] = LogStore()

    isolation: Isolation | None = None  # what seals its attempts, where it says; None: not reported

    _worker_id: str = ""
    _init_kwargs: dict[str, object]

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        if args:
            raise TypeError(f"{cls.__name__} takes keyword arguments only")
        executor = super().__new__(cls)
        executor._init_kwargs = dict(kwargs)  # for successor()
        return executor

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.attempts_survive_worker and not issubclass(cls, Adopts):
            raise TypeError(f"{cls.__name__}: attempts that survive their worker must be adopted (inherit Adopts)")

    # -- construction -------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_settings(cls, *, cpus: int | None = None, memory_mib: int | None = None) -> Self:
        """An executor configured by the settings, offering at most `cpus` cores and
        `memory_mib` of memory (None: what the backend has). Not bound yet."""

    def bind(self, worker_id: str) -> None:
        """Tie this executor to its worker row (its attempts carry that id). Once only:
        a worker that registers again gets a `successor()`."""
        if not worker_id:
            raise ValueError("an executor is bound to a worker id, not an empty one")
        if self._worker_id:
            raise AlreadyBound(f"{type(self).__name__} is bound to worker {self._worker_id} already")
        self._worker_id = worker_id

    @property
    def worker_id(self) -> str:
        if not self._worker_id:
            raise RuntimeError(f"{type(self).__name__} is not bound to a worker yet (bind() it)")
        return self._worker_id

    @property
    def bound(self) -> bool:
        return bool(self._worker_id)

    def successor(self) -> Self:
        """A new, unbound executor built with the same arguments as this one: what a
        worker that lost its lease and registers again continues with."""
        return type(self)(**self._init_kwargs)

    # -- what it can run ----------------------------------------------------------
    @abstractmethod
    def capacity(self) -> Capacity:
        """Everything this executor can run at once (a node's cores and memory; for a
        cluster, the largest job it accepts)."""

    @abstractmethod
    def free(self) -> Capacity:
        """What is left now for new attempts. A figure the backend does not know (a
        cluster's free memory) is `UNBOUNDED`, never made up."""

    @abstractmethod
    def active(self) -> dict[str, int]:
        """Job id -> attempt number of every attempt not yet reported ended."""

    # -- starting, following, stopping -------------------------------------------
    @abstractmethod
    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        """Start the attempts (or hand them to the scheduler in one call). Returns what
        is already known: a Started for each that runs now, an Outcome for each that
        could not be started. The others report later through `collect`. Never raises
        for one bad attempt: that attempt's Outcome says what went wrong."""

    @abstractmethod
    def wake_up(self) -> WakeUp:
        """What to wait on before the next `collect()` (see `wait`)."""

    @abstractmethod
    def collect(self) -> list[Report]:
        """Without blocking: what happened since the last call (attempts started or
        ended), each report exactly once. An attempt's Outcome comes only once it has
        stopped for good."""

    @abstractmethod
    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str, force: bool = False) -> None:
        """Stop these attempts (job id, attempt number), by their external ids, in as few
        calls as the backend allows: gracefully (TERM, the kill grace, KILL), or at once
        with `force`. Each outcome still comes out of `collect`, with `reason` (the
        first one given) and reason_code `cancelled`, once the attempt has stopped."""

    def collect_within(self, timeout: float, *, until: Callable[[list[Report]], bool] = bool) -> list[Report]:
        """Wait (`wake_up`, `wait`) and `collect` until `until(reports so far)` or
        `timeout` seconds have passed; everything collected. For shutdown and tests:
        the worker loop waits on its own descriptors as well."""
        deadline = time.monotonic() + timeout
        reports = self.collect()
        while not until(reports):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait(self.wake_up(), timeout=left)
            reports.extend(self.collect())
        return reports

    def shutdown(self, *, grace: float, reason: str = "worker stopped") -> list[Outcome]:
        """Stop every active attempt and return their outcomes (worker stopping): each
        is asked to stop (TERM), those left after `grace` seconds are killed, and those
        still not gone `FORCE_WAIT` seconds later are given up on: they are reported
        ended, not charged ("did not stop"), and logged; whatever is left of them is
        a dead worker's, which `Recovers.recover` of the next worker stops."""

        def ended() -> bool:
            return not self.active()

        self.cancel(keys=list(self.active().items()), reason=reason)
        reports = self.collect_within(grace, until=lambda _: ended())
        if not ended():
            self.cancel(keys=list(self.active().items()), reason=reason, force=True)
            reports += self.collect_within(FORCE_WAIT, until=lambda _: ended())
        outcomes = [report for report in reports if isinstance(report, Outcome)]
        left = self.active()
        if left:
            logger.error("%d attempt(s) did not stop within %.1f s of being killed: %s", len(left), FORCE_WAIT, sorted(left))
            outcomes.extend(
                Outcome(
                    job_id,
                    attempt,
                    succeeded=False,
                    reason=f"{reason}; did not stop within {FORCE_WAIT:g} s of being killed",
                    reason_code=WORKER_STOPPED,
                )
                for job_id, attempt in left.items()
            )
            self.forget(list(left.items()))
        return outcomes

    def forget(self, keys: list[tuple[str, int]]) -> None:  # noqa: B027 (optional)
        """Stop following these attempts (given up on by `shutdown`)."""

    # -- what it reports of its sealing ---------------------------------------------
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


class Adopts(ABC):
    """Capability: takes over the attempts a stopped or lost worker of the same executor
    left live (those of an executor whose `attempts_survive_worker`)."""

    @abstractmethod
    def adopt(self, attempts: list[LiveAttempt]) -> list[Report]:
        """Follow these attempts from now on; one that never reached the backend is
        reported ended, not charged (it runs again)."""


class Recovers(ABC):
    """Capability: finds and stops what dead workers left running where this executor
    runs attempts (local processes); an executor without it has nothing to stop."""

    @abstractmethod
    def recover(self, *, is_dead: Callable[[str], bool]) -> int:
        """Find attempts left running by workers for which `is_dead(worker_id)` is true
        and stop them for good. Returns how many processes (or jobs) were stopped."""


class Holds(ABC):
    """Capability: takes attempts beyond its free capacity, each held to start the
    moment a running attempt of the same cores and memory ends, in its place, so that a
    slot goes from one short job to the next without waiting for the worker loop to see
    the end and ask for the next start. A held attempt uses nothing until it starts;
    one whose place is not free within a short while comes back out of `collect` as
    `Returned` (or, if it was cancelled meanwhile, as its Outcome)."""

    @abstractmethod
    def hold(self, specs: list[AttemptSpec]) -> int:
        """Hold the leading `specs`, in order, as long as each has a running attempt to
        take the place of; how many were taken. Their Started (or Outcome, or Returned)
        comes out of `collect`."""

    @abstractmethod
    def held(self) -> list[AttemptSpec]:
        """The attempts held now, not started yet (claimed ahead, as a worker's queue is)."""


class Probes(ABC):
    """Capability: can say whether the backend takes work now (for /readyz); an
    executor without it is ready whenever its worker is."""

    @classmethod
    @abstractmethod
    def check_ready(cls) -> str | None:
        """None when the backend can take work now, else why not."""
