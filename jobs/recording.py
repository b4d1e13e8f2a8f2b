"""Recording what an executor reports about a worker's attempts: starts (STARTING ->
RUNNING), waits in a cluster's queue, and ends, with the decision of what comes next
for a job whose attempt ended (`jobs.retry_policy`: done, retried, requeued or failed,
and whether the attempt is charged); and which of the attempts a worker follows it must
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
from jobs.retry_policy import JobPlan, NextStep, next_step
from jobs.statuses import HELD, LIVE, Status
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
    """Record how attempts of `worker` ended: each job moves to what
    `jobs.retry_policy.next_step` decides (SUCCEEDED, FAILED, or RUNNABLE again, with
    the memory a rule raised), guarded by the worker and attempt number; a charged
    failure counts towards its attempts, an infrastructure requeue towards
    BATCHES_MAX_REQUEUES.
    `started` holds the starts of these attempts not recorded yet (the job passes
    through RUNNING). Closes the attempt rows. Returns jobs whose status changed."""
    now = now or timezone.now()
    started = started or {}
    jobs = {
        str(row[0]): JobPlan(
            max_attempts=row[1],
            rules=row[2],
            memory_mib=row[3] or row[4],
            charged=row[5],
            requeues=row[6],
            cancel_requested=row[7] is not None,
        )
        for row in Job.objects.filter(pk__in=[o.job_id for o in outcomes])
        .order_by()
        .values_list(
            "pk",
            "batch__max_attempts",
            "batch__retry_rules",
            "memory_mib",
            "batch__memory",
            "charged_attempts",
            "requeues",
            "cancel_requested_at",
        )
    }
    groups: dict[tuple[NextStep, bool], list[tuple[str, int]]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.job_id not in jobs:
            continue  # deleted meanwhile
        step = next_step(outcome=outcome, job=jobs[outcome.job_id])
        groups[(step, (outcome.job_id, outcome.attempt) in started)].append((outcome.job_id, outcome.attempt))
    changed = 0
    for (step, unseen_start), items in groups.items():
        fields: dict[str, Any] = {"exit_code": step.exit_code}
        if step.charge:
            fields["charged_attempts"] = F("charged_attempts") + 1
        if step.requeue:
            fields["requeues"] = F("requeues") + 1
        if step.memory_mib is not None:
            fields["memory_mib"] = step.memory_mib
        if unseen_start:
            fields.update(sources=[Status.STARTING], through=Status.RUNNING)
        changed += _grouped(worker=worker, items=items, to_status=step.status, reason=step.reason, now=now, **fields)
    attempt_rows.close_attempts(outcomes=outcomes, now=now, worker=worker, started=started)
    return changed


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
