"""What comes next for a job whose attempt ended: the one policy, for every backend.

`next_step` decides, in this order:
1. the attempt succeeded: SUCCEEDED;
2. a cancel was asked for: FAILED `Cancelled by user`, not charged;
3. the attempt ended for an infrastructure reason (core.reason_codes.INFRASTRUCTURE: a
   lost or stopped worker, a node failure, a preemption, a boot failure, the cluster
   cancelling it, the service failing around it): never the user's. RUNNABLE again
   without using an attempt, counted in the job's `requeues`, up to
   BATCHES_MAX_REQUEUES; past that FAILED, saying so (a job must not loop forever on a
   broken node or a bug);
4. the batch's retry rules (batches.retry_rules), in order, the first that matches
   (`on_exit_code` holds the exit code, or `on_reason` is the reason code): `exit` ends
   it FAILED now; `retry` retries it while attempts are left, asking `memory_factor`
   times the memory for the next attempt if the rule says so (up to
   BATCHES_MAX_MEMORY_MIB);
5. no rule matches (or there are none): retried while attempts are left, as
   `max_attempts` alone always did; else FAILED.
A charged failure (4, 5) uses up one of the job's attempts.
"""

import math
from typing import Any, NamedTuple

from django.conf import settings

from core import reason_codes
from jobs.executors.base import Outcome
from jobs.statuses import CANCELLED_REASON, Status


class JobPlan(NamedTuple):
    """What the policy needs to know of the job and its batch."""

    max_attempts: int
    rules: list[dict[str, Any]]
    memory_mib: int  # what the attempt that ended asked for
    charged: int  # failures charged since the user last retried it
    requeues: int  # infrastructure requeues since then
    cancel_requested: bool


class NextStep(NamedTuple):
    """Where a job goes once an attempt of it has ended."""

    status: str
    reason: str
    exit_code: int | None
    charge: bool  # the attempt uses up one of the job's attempts
    requeue: bool = False  # an infrastructure requeue, counted against BATCHES_MAX_REQUEUES
    memory_mib: int | None = None  # the next attempt's memory, when a rule raised it


def next_step(*, outcome: Outcome, job: JobPlan) -> NextStep:
    """See the module's docstring. A pure function: jobs.recording writes what it decides."""
    if outcome.succeeded:
        return NextStep(Status.SUCCEEDED, "", 0, charge=False)
    if job.cancel_requested:
        return NextStep(Status.FAILED, CANCELLED_REASON, outcome.exit_code, charge=False)
    if outcome.reason_code in reason_codes.INFRASTRUCTURE:
        return _requeue(outcome=outcome, job=job)
    left = job.charged + 1 < job.max_attempts
    for index, rule in enumerate(job.rules):
        if not _matches(rule, outcome):
            continue
        which = f"rule {index + 1}"
        if rule["action"] == "exit":
            return NextStep(Status.FAILED, f"{outcome.reason} ({which} says exit)", outcome.exit_code, charge=True)
        if not left:
            return NextStep(Status.FAILED, f"{outcome.reason} ({which} says retry; no attempts left)", outcome.exit_code, charge=True)
        factor = rule.get("memory_factor")
        if factor:
            memory = min(math.ceil(job.memory_mib * factor), settings.BATCHES_MAX_MEMORY_MIB)
            return NextStep(
                Status.RUNNABLE,
                f"Attempt {outcome.attempt} failed ({outcome.reason}); {which}: retrying with {memory} MiB",
                outcome.exit_code,
                charge=True,
                memory_mib=memory,
            )
        return NextStep(
            Status.RUNNABLE,
            f"Attempt {outcome.attempt} failed ({outcome.reason}); {which}: waiting to retry",
            outcome.exit_code,
            charge=True,
        )
    if left:
        return NextStep(
            Status.RUNNABLE, f"Attempt {outcome.attempt} failed ({outcome.reason}); waiting to retry", outcome.exit_code, charge=True
        )
    return NextStep(Status.FAILED, outcome.reason, outcome.exit_code, charge=True)


def _matches(rule: dict[str, Any], outcome: Outcome) -> bool:
    if "on_exit_code" in rule:
        return outcome.reason_code == reason_codes.EXIT_CODE and outcome.exit_code in rule["on_exit_code"]
    return outcome.reason_code == rule.get("on_reason")


def _requeue(*, outcome: Outcome, job: JobPlan) -> NextStep:
    limit = settings.BATCHES_MAX_REQUEUES
    if job.requeues < limit:
        return NextStep(
            Status.RUNNABLE,
            f"Attempt {outcome.attempt} stopped ({outcome.reason}); requeued, using no attempt (not the job's doing;"
            f" requeue {job.requeues + 1} of {limit})",
            None,
            charge=False,
            requeue=True,
        )
    return NextStep(
        Status.FAILED,
        f"{outcome.reason}; requeued {limit} times after failures that were not the job's (BATCHES_MAX_REQUEUES): not again",
        outcome.exit_code,
        charge=False,
    )
