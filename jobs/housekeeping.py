"""The deployment's housekeeping: declaring lost workers LOST and recovering their jobs,
placing queued jobs, purging deleted batches, advancing batch cancels and announcing
finished batches (`jobs.batch_finished`). It is work
for the whole deployment, not for one worker, so one worker at a time does it.

Workers call `housekeep(worker=...)` every `HOUSEKEEPING_SECONDS` (and when woken by new
work); it returns None at once unless the caller is the sweeper:

- The sweeper is the oldest ACTIVE worker whose lease is live (the workers' own leases:
  no table or process of its own). When it stops, or its lease runs out (it died, hung
  or lost the database), the next oldest is the sweeper at its next call, and its first
  sweep recovers the one before.
- On PostgreSQL a run also holds an advisory lock, so two runs never overlap, even
  while two workers each believe they are the oldest (a lease that ran out under a
  sweeper still at work) or with `housekeep()` called outside a worker (commands,
  tests). It is a session lock held for the run only: the run is several transactions
  (a purge commits every chunk and removes the chunk's log files after its commit),
  and a process that dies releases it with its connection. SQLite has one writer and
  every worker on one machine: the election is enough.
"""

from dataclasses import dataclass

from django.db import DatabaseError, connection
from django.utils import timezone

from jobs.batch_finished import record_finished_batches
from jobs.dispatch import DISPATCH_LIMIT, dispatch
from jobs.models import Worker
from jobs.recovery import recover_lost_workers
from jobs.removal import PURGE_CHUNK, purge_deleted_batches
from jobs.services import advance_batch_cancels
from jobs.wakeup import notify_work

# A worker looks for housekeeping to do this often (and when woken by new work).
HOUSEKEEPING_SECONDS = 1.0
# pg_try_advisory_lock key of a housekeeping run ("hkpg" in ASCII).
_HOUSEKEEPING_LOCK_KEY = 0x686B7067


@dataclass(frozen=True)
class Swept:
    recovered: int  # jobs of lost workers recovered
    dispatched: int  # queued jobs placed (made RUNNABLE or PENDING)
    purged: int  # jobs of deleted batches removed
    cancelled: int  # jobs of cancelled batches cancelled
    finished: int = 0  # batch.finished events written


def housekeep(
    *, worker: Worker | None = None, purge_budget: int = PURGE_CHUNK, purge_chunk: int = PURGE_CHUNK, place: int = DISPATCH_LIMIT
) -> Swept | None:
    """One round of housekeeping, if `worker` is the sweeper (see the module) and no
    other run is under way; None otherwise, having done nothing. Without `worker`
    (commands, tests) only the second condition holds. `place`: at most this many
    queued jobs are placed (`dispatched` reaching it means there may be more)."""
    if worker is not None and sweeper_id() != worker.pk:
        return None
    if not _take_lock():
        return None
    try:
        recovered = recover_lost_workers()
        placed = dispatch(limit=place)
        if placed.fresh:
            # Every idle worker claims what was placed, not only the sweeper, which
            # would otherwise run a whole small batch alone before the others' next look.
            # Not when batches were only topped up: their workers are at them already,
            # and the wake-up would bring the sweeper itself straight back here.
            notify_work()
        return Swept(
            recovered=recovered,
            dispatched=placed.moved,
            purged=purge_deleted_batches(budget=purge_budget, chunk=purge_chunk),
            cancelled=advance_batch_cancels(),
            finished=record_finished_batches(),
        )
    finally:
        _release_lock()


def sweeper_id() -> object | None:
    """The id of the worker elected to do the housekeeping: the oldest ACTIVE one whose
    lease is live (None: there is none)."""
    live = Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__gt=timezone.now())
    return live.order_by("started_at", "pk").values_list("pk", flat=True).first()


def _take_lock() -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_HOUSEKEEPING_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _release_lock() -> None:
    if connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_HOUSEKEEPING_LOCK_KEY])
    except DatabaseError:
        # The connection broke, or its transaction failed (the run's error is on its
        # way up): end the session, which releases the lock, rather than keep it.
        connection.close()
