"""Recording what an executor reports about a worker's attempts: starts (STARTING ->
RUNNING), waits in a cluster's queue, and ends, with the decision of what comes next
for a job whose attempt ended (`next_step`: done, retried, requeued or failed, and
whether the attempt is charged); and which of the attempts a worker follows it must
stop (`check_attempts`: orphaned, or cancelled).

Plain functions, backend-agnostic, run in the worker's transaction: every status change
goes through `jobs.transitions.transition`, guarded by the worker and attempt number it
concerns (a late report about an attempt already declared lost changes nothing), and
every attempt row through `jobs.attempts`.
"""

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.db.models import F, Q
from django.utils import timezone

from jobs import attempts as attempt_rows
from jobs import sql
from jobs.executors.base import Outcome, Queued, Report, Started
from jobs.models import Job, Worker
from jobs.statuses import CANCELLED_REASON, HELD, LIVE, Status
from jobs.transitions import set_reason, transition


def record_reports(*, worker: Worker, reports: Iterable[Report], from_queue: bool = False) -> int:
    """Record what happened to `worker`'s attempts, in the caller's transaction: starts
    (STARTING -> RUNNING, the attempt row RUNNING with its external id) and ends. An
    attempt that started and ended since the last call is written once, passing through
    RUNNING (both events, both times). Reports about attempts that are no longer this
    worker's live attempt (deleted, declared lost) change nothing. Returns jobs whose
    status changed.

    `from_queue`: the executor queues work itself (a cluster). Its attempts may wait in
    the cluster's queue with their job RUNNABLE (`Queued` reports); a start or an end of
    such an attempt first brings its job back to STARTING, the way it came."""
    reports = list(reports)
    outcomes = [r for r in reports if isinstance(r, Outcome)]
    ended = {(o.job_id, o.attempt) for o in outcomes}
    started = {(r.job_id, r.attempt): r for r in reports if isinstance(r, Started)}
    only_started = [r for key, r in started.items() if key not in ended]
    queued = {(r.job_id, r.attempt): r for r in reports if isinstance(r, Queued)}  # the latest of each
    now = timezone.now()
    changed = 0
    if queued:
        changed += _record_queued(
            worker=worker, reports=[r for key, r in queued.items() if key not in ended and key not in started], now=now
        )
    if from_queue and (started or ended):
        changed += _grouped(
            worker=worker,
            items=[*started, *ended],
            to_status=Status.STARTING,
            reason="Started by the cluster",
            sources=[Status.RUNNABLE],
            now=now,
        )
    if only_started:
        items = [(r.job_id, r.attempt) for r in only_started]
        changed += _grouped(worker=worker, items=items, to_status=Status.RUNNING, reason="", sources=[Status.STARTING], now=now)
        attempt_rows.mark_started(reports=only_started, now=now)
    if outcomes:
        changed += record_outcomes(worker=worker, outcomes=outcomes, now=now, started={k: v for k, v in started.items() if k in ended})
    return changed


def queue_reason(report: Queued) -> str:
    """What a job waiting in a cluster's queue says in `reason`."""
    if report.placed:
        return f"Starting on {report.node}" if report.node else "Starting"
    return f"Queued as {report.external_id}: {report.reason}" if report.external_id else report.reason


def _record_queued(*, worker: Worker, reports: list[Queued], now: Any) -> int:
    """Queued attempts: RUNNABLE with the scheduler's reason (or STARTING once placed),
    and their external ids on the attempt rows."""
    changed = 0
    by_target: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for report in reports:
        by_target[(Status.STARTING if report.placed else Status.RUNNABLE, queue_reason(report))].append((report.job_id, report.attempt))
    for (to_status, reason), items in by_target.items():
        source = Status.RUNNABLE if to_status == Status.STARTING else Status.STARTING
        changed += _grouped(worker=worker, items=items, to_status=to_status, reason=reason, sources=[source], now=now)
        if to_status == Status.RUNNABLE:
            # Already waiting: only the reason changes (no new state, no event).
            by_attempt: dict[int, list[str]] = defaultdict(list)
            for job_id, attempt in items:
                by_attempt[attempt].append(job_id)
            for attempt, ids in by_attempt.items():
                set_reason(job_ids=ids, status=Status.RUNNABLE, reason=reason, guard=Q(worker=worker, attempts=attempt))
    attempt_rows.mark_queued(reports=[r for r in reports if r.external_id])
    return changed


def record_outcomes(
    *, worker: Worker, outcomes: list[Outcome], now: Any = None, started: dict[tuple[str, int], Started] | None = None
) -> int:
    """Record how attempts of `worker` ended: each job moves to what `next_step`
    decides (SUCCEEDED, FAILED, or RUNNABLE again), guarded by the worker and attempt
    number, and a charged failure counts towards its `max_attempts`.
    `started` holds the starts of these attempts not recorded yet (the job passes
    through RUNNING). Closes the attempt rows. Returns jobs whose status changed."""
    now = now or timezone.now()
    started = started or {}
    jobs = {
        str(pk): (max_attempts, charged, cancel_at)
        for pk, max_attempts, charged, cancel_at in Job.objects.filter(pk__in=[o.job_id for o in outcomes])
        .order_by()
        .values_list("pk", "batch__max_attempts", "charged_attempts", "cancel_requested_at")
    }
    groups: dict[tuple[NextStep, bool], list[tuple[str, int]]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.job_id not in jobs:
            continue  # deleted meanwhile
        max_attempts, charged, cancel_at = jobs[outcome.job_id]
        step = next_step(outcome=outcome, max_attempts=max_attempts, charged=charged, cancel_requested=cancel_at is not None)
        groups[(step, (outcome.job_id, outcome.attempt) in started)].append((outcome.job_id, outcome.attempt))
    changed = 0
    for (step, unseen_start), items in groups.items():
        fields: dict[str, Any] = {"exit_code": step.exit_code}
        if step.charge:
            fields["charged_attempts"] = F("charged_attempts") + 1
        if unseen_start:
            fields.update(sources=[Status.STARTING], through=Status.RUNNING)
        changed += _grouped(worker=worker, items=items, to_status=step.status, reason=step.reason, now=now, **fields)
    attempt_rows.close_attempts(outcomes=outcomes, now=now, worker=worker, started=started)
    return changed


class NextStep(NamedTuple):
    """Where a job goes once an attempt of it has ended."""

    status: str
    reason: str
    exit_code: int | None
    charge: bool  # the attempt uses up one of the job's `max_attempts`


def next_step(*, outcome: Outcome, max_attempts: int, charged: int, cancel_requested: bool) -> NextStep:
    """What comes next for a job whose attempt ended with `outcome`, given its batch's
    `max_attempts`, the failures already `charged` to it and whether a cancel was asked
    for, in this order:
    - it succeeded: SUCCEEDED (exit code 0);
    - a cancel was asked for: FAILED `Cancelled by user` (the attempt has now stopped),
      not charged;
    - the attempt is not charged (the worker stopped, or lost the database): RUNNABLE
      again, without using up an attempt;
    - it failed with attempts left (charged + 1 < max_attempts): RUNNABLE, charged, its
      reason saying which attempt failed and why;
    - else FAILED with the attempt's reason, charged.
    A pure function: `record_outcomes` writes what it decides."""
    if outcome.succeeded:
        return NextStep(Status.SUCCEEDED, "", 0, charge=False)
    if cancel_requested:
        return NextStep(Status.FAILED, CANCELLED_REASON, outcome.exit_code, charge=False)
    if not outcome.charged:
        return NextStep(Status.RUNNABLE, f"Attempt {outcome.attempt} stopped ({outcome.reason}); requeued", None, charge=False)
    if charged + 1 < max_attempts:
        return NextStep(
            Status.RUNNABLE, f"Attempt {outcome.attempt} failed ({outcome.reason}); waiting to retry", outcome.exit_code, charge=True
        )
    return NextStep(Status.FAILED, outcome.reason, outcome.exit_code, charge=True)


def _grouped(
    *, worker: Worker, items: list[tuple[str, int]], to_status: str, reason: str, now: Any, sources: Iterable[str] = LIVE, **fields: Any
) -> int:
    by_attempt: dict[int, list[str]] = defaultdict(list)
    for job_id, attempt in items:
        by_attempt[attempt].append(job_id)
    changed = 0
    for attempt, ids in by_attempt.items():
        guard = Q(worker=worker, attempts=attempt)
        changed += len(transition(job_ids=ids, from_statuses=sources, to_status=to_status, reason=reason, now=now, guard=guard, **fields))
    return changed


# -- what the worker must stop ---------------------------------------------------------
class AttemptCheck(NamedTuple):
    orphaned: set[str]  # no longer this worker's live attempt: stop, nothing to record
    cancelled: set[str]  # a cancel was asked for: stop, then record FAILED


def check_attempts(*, worker: Worker, attempts: dict[str, int]) -> AttemptCheck:
    """Of `attempts` (job id -> attempt number, this worker's), which are orphaned (the
    job or its batch was deleted, it was declared lost, or moved on) and which have a
    cancel request."""
    ids = list(attempts)
    live: dict[str, tuple[int, bool]] = {}
    for start in range(0, len(ids), sql.CHUNK):
        chunk = ids[start : start + sql.CHUNK]
        # Found by primary key only, the worker and status checked here: a condition on
        # them in SQL could send the planner through the worker's (or the status's) index
        # instead, reading every job the worker ever ran (see sql.filter_rows_found_by_key).
        rows = Job.objects.filter(pk__in=chunk).order_by().values_list("pk", "worker_id", "status", "attempts", "cancel_requested_at")
        live.update(
            (str(pk), (number, cancel_at is not None))
            for pk, worker_id, status, number, cancel_at in rows
            if worker_id == worker.pk and status in HELD
        )
    orphaned = {job_id for job_id, number in attempts.items() if live.get(job_id, (None,))[0] != number}
    cancelled = {job_id for job_id in attempts if job_id not in orphaned and live[job_id][1]}
    return AttemptCheck(orphaned=orphaned, cancelled=cancelled)
