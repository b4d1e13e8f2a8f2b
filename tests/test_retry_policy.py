"""The one policy for what follows an attempt's end (jobs.retry_policy), as a table:
every backend's ends (Slurm's states through their mapping, a lost or stopped local
worker) and the retry rules. Pure: no database."""

import pytest
from django.test import override_settings

from core import reason_codes
from jobs.executors.base import Outcome
from jobs.executors.slurm_outcomes import describe_end
from jobs.retry_policy import JobPlan, next_step

RULES = [
    {"on_exit_code": [3], "action": "retry"},
    {"on_exit_code": [1], "action": "exit"},
    {"on_reason": "out_of_memory", "action": "retry", "memory_factor": 2.0},
    {"on_reason": "timeout", "action": "exit"},
]


def plan(*, max_attempts=3, rules=RULES, memory_mib=200, charged=0, requeues=0, cancel_requested=False) -> JobPlan:
    return JobPlan(max_attempts, rules, memory_mib, charged, requeues, cancel_requested)


def failed(reason_code: str, exit_code: int | None = None, reason: str = "it failed") -> Outcome:
    return Outcome("j", 1, succeeded=False, exit_code=exit_code, reason=reason, reason_code=reason_code)


@pytest.mark.parametrize(
    ("outcome", "job", "expected"),
    [
        # (status, charge, requeue, memory)
        (Outcome("j", 1, succeeded=True, exit_code=0, reason_code="succeeded"), plan(), ("SUCCEEDED", False, False, None)),
        (failed("exit_code", 3), plan(cancel_requested=True), ("FAILED", False, False, None)),
        (failed("exit_code", 3), plan(), ("RUNNABLE", True, False, None)),  # rule 1: retry
        (failed("exit_code", 3), plan(charged=2), ("FAILED", True, False, None)),  # rule 1, no attempts left
        (failed("exit_code", 1), plan(), ("FAILED", True, False, None)),  # rule 2: exit with attempts left
        (failed("exit_code", 7), plan(), ("RUNNABLE", True, False, None)),  # no rule: retried while attempts are left
        (failed("exit_code", 7), plan(charged=2), ("FAILED", True, False, None)),
        (failed("exit_code", 7), plan(max_attempts=1, rules=[]), ("FAILED", True, False, None)),  # max_attempts alone
        (failed("out_of_memory", None), plan(), ("RUNNABLE", True, False, 400)),  # rule 3: twice the memory
        (failed("out_of_memory", None), plan(memory_mib=3000), ("RUNNABLE", True, False, 4096)),  # up to the site's maximum
        (failed("timeout", None), plan(), ("FAILED", True, False, None)),  # rule 4
        (failed("signal", None), plan(), ("RUNNABLE", True, False, None)),
        # An exit code that a signal or a limit caused is not an exit-code rule's match.
        (failed("out_of_memory", 1), plan(rules=[{"on_exit_code": [1], "action": "exit"}]), ("RUNNABLE", True, False, None)),
        # Infrastructure: never charged, requeued up to BATCHES_MAX_REQUEUES, whatever the rules.
        (failed("worker_lost"), plan(max_attempts=1), ("RUNNABLE", False, True, None)),
        (failed("worker_stopped"), plan(max_attempts=1, charged=0), ("RUNNABLE", False, True, None)),
        (failed("node_failure"), plan(requeues=4), ("RUNNABLE", False, True, None)),
        (failed("node_failure"), plan(requeues=5), ("FAILED", False, False, None)),
        (failed("internal_error"), plan(max_attempts=1), ("RUNNABLE", False, True, None)),
        (failed("preempted"), plan(cancel_requested=True), ("FAILED", False, False, None)),  # a cancel wins
    ],
)
@override_settings(BATCHES_MAX_REQUEUES=5, BATCHES_MAX_MEMORY_MIB=4096)
def test_the_policy_table(outcome, job, expected):
    step = next_step(outcome=outcome, job=job)
    assert (step.status, step.charge, step.requeue, step.memory_mib) == expected, step


@override_settings(BATCHES_MAX_REQUEUES=5)
def test_reasons_say_what_happened_and_which_rule():
    assert next_step(outcome=failed("exit_code", 1, "exit code 1"), job=plan()).reason == "exit code 1 (rule 2 says exit)"
    assert next_step(outcome=failed("exit_code", 3, "exit code 3"), job=plan()).reason == (
        "Attempt 1 failed (exit code 3); rule 1: waiting to retry"
    )
    assert next_step(outcome=failed("exit_code", 3, "exit code 3"), job=plan(charged=2)).reason == (
        "exit code 3 (rule 1 says retry; no attempts left)"
    )
    assert next_step(outcome=failed("out_of_memory", reason="killed: out of memory"), job=plan()).reason == (
        "Attempt 1 failed (killed: out of memory); rule 3: retrying with 400 MiB"
    )
    assert next_step(outcome=failed("node_failure", reason="node failed (Slurm: NODE_FAIL)"), job=plan(requeues=5)).reason == (
        "node failed (Slurm: NODE_FAIL); requeued 5 times after failures that were not the job's (BATCHES_MAX_REQUEUES): not again"
    )


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("NODE_FAIL", None),
        ("PREEMPTED", {"signal": 15}),
        ("BOOT_FAIL", None),
        ("CANCELLED", {"signal": 15}),
        ("REVOKED", None),
        (None, None),
    ],
)
@override_settings(BATCHES_MAX_REQUEUES=5)
def test_slurms_infrastructure_ends_use_no_attempt(state, status):
    """A node failure with the default single attempt was a permanent FAILED."""
    end = describe_end(state=state, status=status, timeout=60, memory_mib=256)
    outcome = Outcome("j", 1, succeeded=end.succeeded, exit_code=end.exit_code, reason=end.reason, reason_code=end.reason_code)
    assert outcome.reason_code in reason_codes.INFRASTRUCTURE
    step = next_step(outcome=outcome, job=plan(max_attempts=1, rules=[]))
    assert (step.status, step.charge, step.requeue) == ("RUNNABLE", False, True)
    assert not outcome.charged


@pytest.mark.parametrize(("state", "status"), [("FAILED", {"code": 3}), ("OUT_OF_MEMORY", {"signal": 9}), ("TIMEOUT", {"signal": 15})])
def test_slurms_job_failures_are_the_jobs(state, status):
    end = describe_end(state=state, status=status, timeout=60, memory_mib=256)
    outcome = Outcome("j", 1, succeeded=False, exit_code=end.exit_code, reason=end.reason, reason_code=end.reason_code)
    step = next_step(outcome=outcome, job=plan(max_attempts=1, rules=[]))
    assert (step.status, step.charge) == ("FAILED", True)
