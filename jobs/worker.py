"""The worker loop behind `manage.py runworker`: backend-agnostic glue between the
database (`jobs.claiming`, `jobs.recording`, `jobs.recovery`, `jobs.housekeeping`, `jobs.leases`) and an
executor.

Each step waits for the executor to report starts and ends (not at all when there is
work to claim and room for it; never longer than the oldest unrecorded report may wait),
renews the lease when due, stops attempts that were cancelled or orphaned, calls the
deployment's housekeeping when due (`jobs.housekeeping`: done by one elected worker at a
time), starts claimed attempts that fit, and then, when something is due, writes in one
transaction what happened since the last write and claims new jobs. Attempts start only
once their claim has committed. That write runs on a thread of its own
(`jobs.db_writer`), and until it is over the loop goes on collecting ends and starting
queued attempts; a step returns only once its write is over, so between steps the
database connection is the loop's alone.

Throughput comes from writing in batches: a no-op job costs a few statements shared
with dozens of others, not a transaction of its own. To keep batches full when jobs
are short, a worker whose attempts end quickly claims a few more jobs than it can run at
once and keeps them in a local queue (STARTING: placed, launching); with long jobs it
claims only what fits, so idle workers elsewhere get the rest.
"""

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from core.reason_codes import CANCELLED, WORKER_LOST, WORKER_STOPPED
from jobs.claim_pace import ClaimPace
from jobs.claiming import claim_jobs
from jobs.db_writer import DatabaseWriter
from jobs.executors.base import Adopts, AttemptSpec, Capacity, Executor, Holds, Outcome, Recovers, Report, Returned, Started, wait
from jobs.fencing import Fence
from jobs.housekeeping import HOUSEKEEPING_SECONDS, Swept, housekeep
from jobs.leases import expire_dead_local_workers, register_worker, renew_lease, stop_worker, worker_is_dead
from jobs.models import Worker
from jobs.policy import refusal
from jobs.recording import check_attempts, record_reports
from jobs.recovery import LOST_CONTACT, adopt_attempts
from jobs.statuses import CANCELLED_REASON
from jobs.wakeup import LocalWorkListener, WorkListener

logger = logging.getLogger("jobs.worker")
T = TypeVar("T")

# Reports (a start, an end) wait at most this long to be written; while short jobs
# stream through, up to the longer time (each write costs milliseconds in which nothing
# starts, so fewer, larger writes run more jobs).
_RECORD_WITHIN = 0.02
_RECORD_WITHIN_BUSY = 0.1
# ...or until this many have gathered.
_RECORD_BATCH = 512
_CLAIM_LIMIT = 128
# A sweep places at most this many queued jobs, in about 50 ms here, and the next turn
# sweeps again if there are more: placing a thousand in one transaction took 220 ms,
# and the submission's first job waited for all of it.
_PLACE_PER_SWEEP = 256


@dataclass
class WorkerConfig:
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    fencing: bool = True

    @classmethod
    def from_settings(cls, **overrides: float | bool | None) -> "WorkerConfig":
        values = {
            "lease_seconds": float(settings.BATCHES_WORKER_LEASE_SECONDS),
            "poll_seconds": settings.BATCHES_WORKER_POLL_MS / 1000,
            "fencing": True,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


class WorkerLoop:
    """Runs one executor's attempts. `start()`, then `step()` until told to stop, then
    `stop()`. Not thread-safe: one loop per process (tests may drive `step()`).
    `executor` is not bound yet: the loop binds it to the worker it registers."""

    def __init__(self, *, executor: Executor, config: WorkerConfig) -> None:
        if executor.bound:
            raise ValueError("the worker loop binds its executor to the worker it registers: pass an unbound one")
        self.executor = executor
        self.config = config
        self.worker: Worker | None = None
        self._fence: Fence | None = None
        self._fence_until = math.inf
        self._listener: WorkListener | LocalWorkListener | None = None
        self._writer: DatabaseWriter | None = None
        self._queue: deque[AttemptSpec] = deque()  # claimed, not started yet
        self._reports: list[Report] = []  # from the executor, not written yet
        self._oldest_report = math.inf
        self._start_unwritten = False  # a Started report among them
        self._more_work = True  # the last claim was full, or new work was announced
        self._pace = ClaimPace()
        self._next_heartbeat = 0.0
        self._next_check = 0.0
        self._next_sweep = 0.0
        self.statements = 0  # SQL statements run by `run()`
        self.recorded = 0  # attempt ends written

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Worker:
        if self._writer is None:
            self._writer = DatabaseWriter()
        self._register()
        if self._listener is None:
            self._listener = WorkListener.open()
        self._sweep(force_recover=True)
        return self.worker

    def _register(self) -> None:
        self.worker = register_worker(
            executor=self.executor.kind,
            capacity=self.executor.capacity(),
            lease_seconds=self.config.lease_seconds,
            keeps_attempts=self.executor.attempts_survive_worker,
            isolation=self.executor.isolation_report(),
        )
        self.executor.bind(str(self.worker.pk))
        if self.config.fencing and not self.executor.attempts_survive_worker:
            if self._fence is not None:
                self._fence.close()
            self._fence = Fence(worker_id=str(self.worker.pk))
            self._renew_fence(time.monotonic())
        self._next_heartbeat = time.monotonic() + self._heartbeat_every
        logger.info("worker %s started: %s cpu, %s MiB", self.worker.name, self.worker.cpus, self.worker.memory_mib)
        why = refusal(self.worker)
        if why:
            logger.error("%s", why)

    @property
    def _heartbeat_every(self) -> float:
        return self.config.lease_seconds / 3

    def _renew_fence(self, since: float) -> None:
        # Kill our jobs a little before the lease would let another worker retry them.
        if self._fence is not None:
            margin = min(self.config.lease_seconds * 0.2, 5.0)
            self._fence_until = since + self.config.lease_seconds - margin
            self._fence.renew(until=self._fence_until)

    def run(self, *, should_stop: Callable[[], bool]) -> None:
        with connection.execute_wrapper(self._count_statement):
            self._run(should_stop=should_stop)

    def _count_statement(self, execute: Callable, sql: str, params: object, many: bool, context: dict) -> object:
        # What the database costs per job, for the log line at stop (and the benchmark).
        self.statements += 1
        return execute(sql, params, many, context)

    def _run(self, *, should_stop: Callable[[], bool]) -> None:
        self.start()
        try:
            while not should_stop():
                try:
                    self.step()
                except DatabaseError:
                    # The database went away or refused (restart, network): keep the
                    # attempts running, reconnect and try again; the lease covers a
                    # short outage, the fence a long one.
                    logger.exception("database error; retrying")
                    connection.close()
                    time.sleep(self.config.poll_seconds)
                except Exception:
                    # A bug must not stop every job of the machine: say so and go on.
                    # (Failures of one attempt are that attempt's Outcome, not this.)
                    logger.exception("unexpected error in the worker loop; going on")
                    time.sleep(self.config.poll_seconds)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop cleanly: record what finished and give back what never started. Local
        attempts are stopped (TERM, grace, KILL) and their jobs requeued without using
        up an attempt; attempts that outlive their worker are left for the next one."""
        if self.worker is None:
            return
        self._take(self.executor.collect())
        stopped = f"worker {self.worker.name} stopped"
        unstarted = [Outcome(s.job_id, s.attempt, succeeded=False, reason=stopped, reason_code=WORKER_STOPPED) for s in self._queue]
        self._queue.clear()
        interrupted: list[Outcome] = []
        if not self.executor.attempts_survive_worker:
            for outcome in self.executor.shutdown(grace=float(settings.BATCHES_KILL_GRACE_SECONDS)):
                interrupted.append(_not_the_jobs(outcome, reason=stopped, code=WORKER_STOPPED))
        with transaction.atomic():
            record_reports(worker=self.worker, reports=[*self._reports, *unstarted, *interrupted], from_queue=self.executor.queues_work)
            stop_worker(worker=self.worker)
        self._reports = []
        if self._fence is not None:
            self._fence.close()
            self._fence = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        logger.info(
            "worker %s stopped (%d attempt(s) requeued); %d attempt end(s) recorded with %d SQL statement(s)",
            self.worker.name,
            len(unstarted) + len(interrupted),
            self.recorded,
            self.statements,
        )

    # -- one step ---------------------------------------------------------------------
    def step(self) -> bool:
        """One turn of the loop; True if it did something."""
        # The loop owns the wait: on the executor's descriptors and deadline and on the
        # announcement of new work, whichever comes first; then what happened.
        listener = (self._listener.fileno(),) if self._listener is not None else ()
        wait(self.executor.wake_up(), timeout=self._wait_time(), fds=listener)
        self._take(self.executor.collect())
        if self._listener is not None and self._listener.drain():
            self._more_work = True
            self._next_sweep = self._next_check = 0.0  # place new jobs, see cancels: now
        now = time.monotonic()
        if now >= self._next_heartbeat and not self._heartbeat(now):
            return True
        if now >= self._next_check:
            self._check()
            self._next_check = now + self.config.poll_seconds
        if now >= self._next_sweep:
            self._sweep()
        self._launch()
        if not self._write_due(now):
            return bool(self._reports)
        self._write()
        return True

    def _write(self) -> None:
        """Write the reports gathered so far and claim new jobs, in one transaction, on
        the writer's thread (`jobs.db_writer`), and meanwhile keep the executor going:
        collect ends, start what is queued (a write takes milliseconds, as long as
        dozens of short jobs). Returns once the write is over, whatever happened: the
        connection is the loop's again. A write that failed is tried again with the
        next one, its reports first."""
        claim = self._claim_room()
        reports, fits = self._reports, self.executor.capacity()
        self._reports, self._oldest_report, self._start_unwritten = [], math.inf, False
        future = self._writer.submit(self._write_and_claim, reports=reports, claim=claim, fits=fits)
        interrupted: BaseException | None = None
        try:
            self._meanwhile(future)
        except BaseException as exc:
            interrupted = exc
        futures.wait([future])
        self._writer.acknowledge()
        failed = future.exception()
        if failed is not None:
            self._reports[:0] = reports
            self._oldest_report = time.monotonic()
            self._start_unwritten = self._start_unwritten or any(isinstance(r, Started) for r in reports)
        else:
            specs, broken = future.result()
            self.recorded += sum(isinstance(r, Outcome) for r in reports)
            # Jobs whose attempt could not even be described are recorded as failed
            # with the next write.
            self._take(broken)
            if claim:
                self._more_work = len(specs) + len(broken) >= claim[1]
                self._queue.extend(specs)
                self._launch()
        if interrupted is not None:
            raise interrupted
        if failed is not None:
            raise failed

    def _on_writer(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        """`function(**kwargs)` (the database only, nothing of the loop's own state) on
        the writer's thread, while the executor goes on (ends collected, queued
        attempts started), as for a write: what it returns, or what it raised. Returns
        once it is over, whatever happened: the connection is the loop's again."""
        future = self._writer.submit(function, **kwargs)
        try:
            self._meanwhile(future)
        finally:
            futures.wait([future])
            self._writer.acknowledge()
        return future.result()

    def _meanwhile(self, future: futures.Future) -> None:
        """Keep the executor going (ends collected, queued attempts started) until
        `future`, the writer's, is done."""
        signal = self._writer.fileno()
        while not future.done():
            ready = wait(self.executor.wake_up(), timeout=self.config.poll_seconds, fds=(signal,))
            self._take(self.executor.collect())
            self._launch()
            if signal in ready:
                # Its function has returned (the signal comes just before its future is
                # done): wait on the future itself. Polling the signal again returns at
                # once, and that spin kept the GIL from the writer's thread for a switch
                # interval (5 ms) each time.
                futures.wait([future])

    def _write_and_claim(
        self, *, reports: list[Report], claim: tuple[Capacity, int] | None, fits: Capacity
    ) -> tuple[list[AttemptSpec], list[Report]]:
        # On the writer's thread: the database only, nothing of the loop's own state.
        with transaction.atomic():
            record_reports(worker=self.worker, reports=reports, from_queue=self.executor.queues_work)
            if not claim:
                return [], []
            return claim_jobs(worker=self.worker, room=claim[0], fits=fits, limit=claim[1])

    def _take(self, reports: list[Report]) -> None:
        if not reports:
            return
        returned = [report.spec for report in reports if isinstance(report, Returned)]
        if returned:  # held and given back unstarted: first in the queue again
            self._queue.extendleft(reversed(returned))
            reports = [report for report in reports if not isinstance(report, Returned)]
            if not reports:
                return
        now = time.monotonic()
        if now >= self._fence_until:
            # The fence has killed our attempts: the database, not the job, is to blame.
            reports = [_not_the_jobs(r, reason=LOST_CONTACT, code=WORKER_LOST) if isinstance(r, Outcome) else r for r in reports]
        ended = [report for report in reports if isinstance(report, Outcome)]
        if ended:
            self._pace.ended(ended, now=now)
            self._more_work = True  # room freed, and a failed attempt may be retried
        self._reports.extend(reports)
        self._oldest_report = min(self._oldest_report, now)
        self._start_unwritten = self._start_unwritten or any(isinstance(r, Started) for r in reports)

    def _launch(self) -> None:
        """Start queued attempts that fit in the executor's free capacity, in one call."""
        if not self._queue:
            return
        free = self.executor.free()
        batch: list[AttemptSpec] = []
        cpus, memory = free.cpus, free.memory_mib
        while self._queue and self._queue[0].cpu <= cpus and self._queue[0].memory_mib <= memory:
            spec = self._queue.popleft()
            cpus, memory = cpus - spec.cpu, memory - spec.memory_mib
            batch.append(spec)
        if batch:
            self._take(self.executor.submit(batch))
        if self._queue and isinstance(self.executor, Holds):
            # The next ones, to start the moment a running job ends, in its place.
            held = self.executor.hold(list(itertools.islice(self._queue, self.executor.capacity().cpus)))
            for _ in range(held):
                self._queue.popleft()

    def _claim_room(self) -> tuple[Capacity, int] | None:
        """What to claim now (room, how many), or None: nothing can or need be claimed."""
        if not self._more_work:
            return None
        free = self.executor.free()
        held = self._held()
        queued_cpus = sum(spec.cpu for spec in itertools.chain(self._queue, held))
        queued_memory = sum(spec.memory_mib for spec in itertools.chain(self._queue, held))
        ahead = self._prefetch()
        capacity = self.executor.capacity()
        factor = math.ceil(ahead / max(capacity.cpus, 1))
        room = Capacity(
            free.cpus - queued_cpus + factor * capacity.cpus,
            free.memory_mib - queued_memory + factor * capacity.memory_mib,
        )
        limit = min(_CLAIM_LIMIT, max(free.cpus, 0) + ahead - len(self._queue) - len(held))
        if limit < 1 or room.cpus < 1 or room.memory_mib < 1:
            return None
        return room, limit

    def _held(self) -> list[AttemptSpec]:
        """Claimed and handed to the executor to start in a running job's place (`Holds`):
        claimed ahead, as the local queue is."""
        return self.executor.held() if isinstance(self.executor, Holds) else []

    def _prefetch(self) -> int:
        """How many jobs to claim beyond the free capacity (`jobs.claim_pace`); none for
        an executor with a queue of its own."""
        return 0 if self.executor.queues_work else self._pace.ahead(slots=self.executor.capacity().cpus)

    def _record_within(self) -> float:
        """How long the oldest unwritten report may wait: longer while jobs stream
        through (a queue of claimed jobs: writes are shared by more of them), not at all
        for a start with nothing queued behind it (an idle worker: no other report is
        coming to share the write, and the start is what a user waits to see; but not
        while attempts are ending, whose reports the start may as well share)."""
        if self._queue:
            return _RECORD_WITHIN_BUSY
        if self._start_unwritten and not self._pace.ended_since(time.monotonic() - _RECORD_WITHIN_BUSY):
            return 0.0
        return _RECORD_WITHIN

    def _needs_jobs(self) -> bool:
        """What is claimed ahead (the local queue, the executor's held attempts) is low
        (below half the prefetch, or nothing) and a claim could take something."""
        low = max(self._prefetch() // 2, self.executor.free().cpus, 1)
        return len(self._queue) + len(self._held()) < low and self._claim_room() is not None

    def _write_due(self, now: float) -> bool:
        if self._reports and (now - self._oldest_report >= self._record_within() or len(self._reports) >= _RECORD_BATCH):
            return True
        return self._needs_jobs()

    def _wait_time(self) -> float:
        now = time.monotonic()
        if self._needs_jobs():
            return 0
        wait = min(self.config.poll_seconds, max(0.0, self._next_heartbeat - now))
        if self._reports:
            wait = min(wait, max(0.0, self._oldest_report + self._record_within() - now))
        if self.executor.active() or self._queue:
            wait = min(wait, max(0.0, self._next_check - now))
        return wait

    def _heartbeat(self, now: float) -> bool:
        if renew_lease(worker=self.worker, lease_seconds=self.config.lease_seconds):
            self._renew_fence(now)
            self._next_heartbeat = now + self._heartbeat_every
            return True
        # Another worker declared us lost and dealt with our jobs: our attempts are no
        # longer theirs. Stop them without reporting, then start over as a new worker.
        logger.error("worker %s lost its lease; stopping its attempts and registering again", self.worker.name)
        # (Within the kill grace, then by force; what is still there after that is
        # given up on and left to the fence and the next worker's recover.)
        if not self.executor.attempts_survive_worker:
            self.executor.shutdown(grace=float(settings.BATCHES_KILL_GRACE_SECONDS), reason="worker lost")
        # An executor serves one worker row: the new registration gets a fresh one
        # (attempts that outlive the worker are adopted by it from the backend).
        self.executor = self.executor.successor()
        self._queue.clear()
        self._reports, self._oldest_report, self._start_unwritten = [], math.inf, False
        self._register()
        if self.executor.attempts_survive_worker:
            self._adopt()
        return False

    def _check(self) -> None:
        """Stop attempts that were cancelled (their outcome is recorded FAILED) or are
        no longer ours (deleted, declared lost: nothing to record)."""
        attempts = {**self.executor.active(), **{spec.job_id: spec.attempt for spec in self._queue}}
        if not attempts:
            return
        check = self._on_writer(check_attempts, worker=self.worker, attempts=attempts)
        if not (check.orphaned or check.cancelled):
            return
        unstarted = [spec for spec in self._queue if spec.job_id in check.orphaned or spec.job_id in check.cancelled]
        self._queue = deque(spec for spec in self._queue if spec not in unstarted)
        self._take(
            [
                Outcome(s.job_id, s.attempt, succeeded=False, reason=CANCELLED_REASON, reason_code=CANCELLED)
                for s in unstarted
                if s.job_id in check.cancelled
            ]
        )
        active = self.executor.active()
        for reason, job_ids in ((CANCELLED_REASON, check.cancelled), ("worker lost the job", check.orphaned)):
            keys = [(job_id, active[job_id]) for job_id in job_ids if job_id in active]
            if keys:
                self.executor.cancel(keys=keys, reason=reason)

    def _sweep(self, *, force_recover: bool = False) -> None:
        # The deployment's housekeeping (lost workers, placing queued jobs, purging
        # deleted batches, batch cancels): done by the elected sweeper only; for the
        # others this is one query. Placing a large submission's jobs takes tens of
        # milliseconds: it runs on the writer's thread, and the executor goes on.
        recover, swept = self._on_writer(self._sweep_database, force_recover=force_recover)
        if recover and isinstance(self.executor, Recovers):
            # Processes left on this machine by dead workers are killed before their
            # jobs are requeued.
            killed = self.executor.recover(is_dead=worker_is_dead)
            if killed:
                logger.warning("killed %d process(es) left running by dead workers", killed)
            swept = self._on_writer(housekeep, worker=self.worker, place=_PLACE_PER_SWEEP)
        if swept and swept.recovered:
            logger.warning("recovered %d job(s) of lost workers", swept.recovered)
        more_to_place = swept is not None and swept.dispatched >= _PLACE_PER_SWEEP
        if self.executor.attempts_survive_worker:
            self._adopt()
        # Jobs may have become RUNNABLE in many ways since the last claim (placed just
        # now or by the sweeper, retried, requeued elsewhere): look again at least once
        # per sweep.
        self._more_work = True
        # More queued jobs than one sweep places: again at the next turn, after this
        # turn's claim (a fresh submission's first jobs start while the rest is placed).
        self._next_sweep = 0.0 if more_to_place else time.monotonic() + max(self.config.poll_seconds, HOUSEKEEPING_SECONDS)

    def _sweep_database(self, *, force_recover: bool) -> tuple[bool, Swept | None]:
        """On the writer's thread, in one hand-over: expire dead workers of this machine,
        then housekeep; or, when the executor must first kill what dead workers left
        (`force_recover`, or some expired), (True, None) without housekeeping."""
        expired = expire_dead_local_workers(worker=self.worker)
        if isinstance(self.executor, Recovers) and (expired or force_recover):
            return True, None
        return False, housekeep(worker=self.worker, place=_PLACE_PER_SWEEP)

    def _adopt(self) -> None:
        if not isinstance(self.executor, Adopts):
            return
        adopted = adopt_attempts(worker=self.worker)
        if adopted:
            logger.warning("adopted %d attempt(s) left by stopped or lost workers", len(adopted))
            self._take(self.executor.adopt(adopted))


def _not_the_jobs(outcome: Outcome, *, reason: str, code: str) -> Outcome:
    """A failed attempt's outcome told as what really ended it (its worker), not charged."""
    return outcome if outcome.succeeded else replace(outcome, reason=reason, reason_code=code)
