"""The worker loop behind `manage.py runworker`: backend-agnostic glue between the
database (`jobs.scheduling`) and an executor (`jobs.executors`).

Each step: wait for attempts to end (not at all while there is something to record or
free capacity and work to fill it; at most `_RECORD_STARTED_WITHIN` while attempts wait
to be marked RUNNING; else up to the poll interval); renew the lease when due; stop
attempts whose job is no longer this worker's live attempt (cancelled, deleted, declared
lost); place SUBMITTED jobs and recover lost workers when due; then, in one transaction,
record what happened (STARTING -> RUNNING for attempts started, then the outcomes) and
claim as many RUNNABLE jobs as fit in the free capacity; after the commit, start them.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from jobs.executors.base import Attempt, Executor, LaunchError, Outcome
from jobs.fencing import Fence
from jobs.models import Worker
from jobs.scheduling import (
    claim_jobs,
    dispatch_submitted,
    expire_dead_local_workers,
    live_attempts,
    record_outcomes,
    record_started,
    recover_lost_workers,
    register_worker,
    renew_lease,
    requeue_attempts,
    stop_worker,
    worker_is_dead,
)
from jobs.states import CANCELLED_REASON

logger = logging.getLogger("jobs.worker")

# Attempts just started are marked RUNNING at the latest this long after their start;
# an attempt that ends sooner has RUNNING and its outcome recorded in one transaction.
_RECORD_STARTED_WITHIN = 0.02


@dataclass
class WorkerConfig:
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    fencing: bool = True

    @classmethod
    def from_settings(cls, **overrides: float | bool) -> "WorkerConfig":
        values = {
            "lease_seconds": float(settings.BATCHES_WORKER_LEASE_SECONDS),
            "poll_seconds": settings.BATCHES_WORKER_POLL_MS / 1000,
            "fencing": True,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


class WorkerLoop:
    """Runs one executor's attempts. `start()`, then `step()` until told to stop, then
    `stop()`. Not thread-safe: one loop per process (tests may drive `step()`)."""

    def __init__(self, *, executor: Executor, config: WorkerConfig) -> None:
        self.executor = executor
        self.config = config
        self.worker: Worker | None = None
        self._fence: Fence | None = None
        self._started: list[Attempt] = []
        self._busy = False
        self._more_work = True  # the last claim found jobs: there may be more
        self._pending_outcomes: list[Outcome] = []
        self._next_heartbeat = 0.0
        self._next_check = 0.0
        self._next_sweep = 0.0

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Worker:
        self._register()
        self._sweep(force_recover=True)
        return self.worker

    def _register(self) -> None:
        self.worker = register_worker(
            executor=self.executor.kind, capacity=self.executor.capacity(), lease_seconds=self.config.lease_seconds
        )
        self.executor.worker_id = str(self.worker.pk)
        if self.config.fencing:
            if self._fence is not None:
                self._fence.close()
            self._fence = Fence(worker_id=str(self.worker.pk))
            self._renew_fence(time.monotonic())
        self._next_heartbeat = time.monotonic() + self._heartbeat_every
        logger.info("worker %s started: %s cpu, %s MiB", self.worker.name, self.worker.cpus, self.worker.memory_mib)

    @property
    def _heartbeat_every(self) -> float:
        return self.config.lease_seconds / 3

    def _renew_fence(self, since: float) -> None:
        # Kill our jobs a little before the lease would let another worker retry them.
        if self._fence is not None:
            margin = min(self.config.lease_seconds * 0.2, 5.0)
            self._fence.renew(until=since + self.config.lease_seconds - margin)

    def run(self, *, should_stop: Callable[[], bool]) -> None:
        self.start()
        try:
            while not should_stop():
                try:
                    self.step()
                except DatabaseError:
                    # The database went away or refused (restart, network): keep the
                    # attempts running, reconnect and try again; the lease covers a
                    # short outage.
                    logger.exception("database error; retrying")
                    connection.close()
                    time.sleep(self.config.poll_seconds)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop cleanly: record what finished, stop the rest (TERM, grace, KILL) and give
        their jobs back to the queue without using up an attempt."""
        if self.worker is None:
            return
        self._pending_outcomes.extend(self.executor.poll(timeout=0))
        with transaction.atomic():
            self._write_records(self._pending_outcomes)
        self._started, self._pending_outcomes = [], []
        interrupted = self.executor.active()
        self.executor.shutdown(grace=float(settings.BATCHES_KILL_GRACE_SECONDS))
        with transaction.atomic():
            if interrupted:
                requeue_attempts(worker=self.worker, attempts=interrupted, reason=f"Requeued: worker {self.worker.name} stopped")
            stop_worker(worker=self.worker)
        if self._fence is not None:
            self._fence.close()
            self._fence = None
        logger.info("worker %s stopped (%d attempt(s) requeued)", self.worker.name, len(interrupted))

    # -- one step ---------------------------------------------------------------------
    def step(self) -> bool:
        """One turn of the loop; True if it did something (the next turn does not wait)."""
        # Outcomes stay pending until recorded: a database error must not lose them.
        self._pending_outcomes.extend(self.executor.poll(timeout=self._wait_time()))
        self._busy = self._tick(list(self._pending_outcomes))
        return self._busy

    def _wait_time(self) -> float:
        free = self.executor.free()
        if self._pending_outcomes or (self._more_work and free.cpus >= 1 and free.memory_mib >= 1):
            return 0
        if self._started:
            return min(self.config.poll_seconds, _RECORD_STARTED_WITHIN)
        return self.config.poll_seconds

    def _tick(self, outcomes: list[Outcome]) -> bool:
        now = time.monotonic()
        busy = bool(outcomes or self._started)
        if now >= self._next_heartbeat and not self._heartbeat(now):
            return True
        if now >= self._next_check:
            self._stop_orphaned_attempts()
            self._next_check = now + self.config.poll_seconds
        if now >= self._next_sweep:
            self._sweep()
        free = self.executor.free()
        if not (outcomes or self._started or (free.cpus >= 1 and free.memory_mib >= 1)):
            return busy
        # One transaction for what happened and the new claims; attempts start only once
        # their claim is committed, and nothing is forgotten before the commit.
        with transaction.atomic():
            self._write_records(outcomes)
            attempts = claim_jobs(worker=self.worker, free=free, exclude=self.executor.active())
        self._started = []
        self._pending_outcomes = []
        self._more_work = bool(attempts)
        self._start(attempts)
        return bool(attempts) or busy

    def _heartbeat(self, now: float) -> bool:
        if renew_lease(worker=self.worker, lease_seconds=self.config.lease_seconds):
            self._renew_fence(now)
            self._next_heartbeat = now + self._heartbeat_every
            return True
        # Another worker declared us lost and requeued our jobs: our attempts are no
        # longer theirs. Stop them without reporting, then start over as a new worker.
        logger.error("worker %s lost its lease; stopping its attempts and registering again", self.worker.name)
        for job_id in list(self.executor.active()):
            self.executor.cancel(job_id=job_id, reason="worker lost")
        while self.executor.active():
            self.executor.poll(timeout=0.05)
        self._started = []
        self._pending_outcomes = []
        self._register()
        return False

    def _write_records(self, outcomes: list[Outcome]) -> None:
        """RUNNING for the attempts started since the last step, then the outcomes (in
        that order: an attempt may have ended already). The caller holds a transaction."""
        if self._started:
            record_started(worker=self.worker, attempts=self._started)
        if outcomes:
            record_outcomes(worker=self.worker, outcomes=outcomes)

    def _stop_orphaned_attempts(self) -> None:
        active = self.executor.active()
        if not active:
            return
        live = live_attempts(worker=self.worker, job_ids=active)
        for job_id in set(active) - live:
            self.executor.cancel(job_id=job_id, reason=CANCELLED_REASON)

    def _sweep(self, *, force_recover: bool = False) -> None:
        expired = expire_dead_local_workers(worker=self.worker)
        if expired or force_recover:
            killed = self.executor.recover(is_dead=worker_is_dead)
            if killed:
                logger.warning("killed %d process(es) left running by dead workers", killed)
        recovered = recover_lost_workers()
        if recovered:
            logger.warning("recovered %d job(s) of lost workers", recovered)
        dispatch_submitted()
        # While busy, at most five sweeps a second; an idle worker looks for new jobs to
        # place at every poll (it has nothing else to do, and they are its next work).
        interval = max(self.config.poll_seconds, 0.2) if self.executor.active() else self.config.poll_seconds
        self._next_sweep = time.monotonic() + interval

    def _start(self, attempts: list[Attempt]) -> None:
        for attempt in attempts:
            try:
                self.executor.submit(attempt)
            except LaunchError as exc:
                # Recorded (from STARTING) by the next step, which does not wait.
                self._pending_outcomes.append(Outcome(attempt.job_id, attempt.attempt, succeeded=False, reason=str(exc)))
            else:
                self._started.append(attempt)
