"""Batch dependencies decided: may a dependent batch's queued jobs go on, must they wait,
or can they never run? jobs/dispatch.py asks, for the batches it is placing, and moves
the jobs (through `jobs.transitions.transition`, as every status change).

A dependency (`batches.models.BatchDependency`) asks that the batch depended on has
`succeeded` (every job SUCCEEDED) or `ended` (every job SUCCEEDED or FAILED). It can no
longer hold when a job of that batch is FAILED and `succeeded` was asked, or when that
batch was deleted (whatever was asked). Deciding costs three queries for any number of
batches: their dependencies, which batches depended on are still there, and those
batches' job counts per status (one GROUP BY on the (batch, status, index) index,
`jobs.counts.status_counts_of_batches`); no job of a dependent batch is read.

A dependent whose jobs were failed stays failed: a later retry of the batch it waited
for (a user's retry of its FAILED jobs) does not bring it back.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from batches.models import Batch, BatchDependency
from jobs.counts import status_counts_of_batches


@dataclass(frozen=True)
class Verdict:
    """`ready`: every condition holds. Otherwise `reason` says what holds the jobs
    (`failed` False: wait, PENDING) or why they can never run (`failed` True: FAILED)."""

    ready: bool
    failed: bool = False
    reason: str = ""


READY = Verdict(ready=True)


def dependency_verdicts(*, batch_ids: Iterable[Any]) -> dict[Any, Verdict]:
    """The verdict on each of `batch_ids` that has dependencies (a batch without any is
    not in the answer: nothing holds it)."""
    wanted: dict[Any, list[tuple[Any, str]]] = {}
    for batch_id, depends_on_id, condition in (
        BatchDependency.objects.filter(batch_id__in=list(batch_ids)).order_by("id").values_list("batch_id", "depends_on_id", "condition")
    ):
        wanted.setdefault(batch_id, []).append((depends_on_id, condition))
    if not wanted:
        return {}
    depended_on = {depends_on_id for dependencies in wanted.values() for depends_on_id, _ in dependencies}
    present = set(Batch.objects.filter(pk__in=depended_on, deleted_at__isnull=True).values_list("pk", flat=True))
    counts = status_counts_of_batches(batch_ids=list(present))
    return {batch_id: _verdict(dependencies, present=present, counts=counts) for batch_id, dependencies in wanted.items()}


def _verdict(dependencies: list[tuple[Any, str]], *, present: set[Any], counts: dict[Any, dict[str, int]]) -> Verdict:
    waiting: list[str] = []
    for depends_on_id, condition in dependencies:
        if depends_on_id not in present:
            return Verdict(ready=False, failed=True, reason=f"Dependency failed: batch {depends_on_id} was deleted (asked: {condition})")
        jobs = counts[depends_on_id]
        total = sum(jobs.values())
        ended = jobs["succeeded"] + jobs["failed"]
        if condition == BatchDependency.Condition.SUCCEEDED:
            if jobs["failed"]:
                return Verdict(
                    ready=False, failed=True, reason=f"Dependency failed: batch {depends_on_id} has a FAILED job (asked: succeeded)"
                )
            if jobs["succeeded"] < total:
                waiting.append(f"Waiting for batch {depends_on_id} to succeed ({ended} of {total} jobs ended)")
        elif ended < total:
            waiting.append(f"Waiting for batch {depends_on_id} to end ({ended} of {total} jobs ended)")
    if not waiting:
        return READY
    more = f" (and {len(waiting) - 1} more batch{'es' if len(waiting) > 2 else ''})" if len(waiting) > 1 else ""
    return Verdict(ready=False, reason=waiting[0] + more)
