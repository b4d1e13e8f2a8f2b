"""Retry rules and infrastructure requeues on real jobs, on each backend (local sealed,
local unsealed, Slurm; the `loop` fixture of tests/test_usage.py, which skips or, in CI,
fails where a backend is missing): the issue's cases, with the attempt rows as proof."""

import pytest

from jobs.models import Job
from tests.test_isolation import filesystems, log_of, submit  # noqa: F401 (fixtures)
from tests.test_usage import loop  # noqa: F401 (fixture)
from tests.worker_helpers import all_finished, drive, python_tool, script_tool

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Holds 300 MiB, every page touched, then says so.
HOG_300 = """
block = bytearray(300 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("held 300 MiB")
"""


def attempts_of(job: Job) -> list[tuple]:
    return list(job.attempt_records.order_by("number").values_list("number", "reason_code", "exit_code", "memory_mib", "charged"))


def test_exit_3_retried_by_rule_until_it_succeeds(loop, alice, filesystems):  # noqa: F811
    script = 'if [ "$BATCH_ATTEMPT" -lt 3 ]; then exit 3; fi; echo "attempt $BATCH_ATTEMPT"'
    rules = [{"on_exit_code": [3], "action": "retry"}]
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": script}}], max_attempts=3, retry_rules=rules)
    drive(loop, all_finished(batch), timeout=90)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts) == ("SUCCEEDED", 3), (job.reason, log_of(job))
    assert attempts_of(job) == [(1, "exit_code", 3, 256, True), (2, "exit_code", 3, 256, True), (3, "succeeded", 0, 256, False)]


def test_exit_1_ends_at_once_by_rule(loop, alice, filesystems):  # noqa: F811
    rules = [{"on_exit_code": [1], "action": "exit"}]
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "exit 1"}}], max_attempts=3, retry_rules=rules)
    drive(loop, all_finished(batch), timeout=60)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts) == ("FAILED", 1)
    assert job.reason.startswith("exit code 1") and job.reason.endswith(" (rule 1 says exit)"), job.reason
    assert attempts_of(job) == [(1, "exit_code", 1, 256, True)]


def test_out_of_memory_retried_with_twice_the_memory(loop, alice, filesystems):  # noqa: F811
    rules = [{"on_reason": "out_of_memory", "action": "retry", "memory_factor": 2}]
    tool = python_tool("hog-300", HOG_300)
    batch = submit(alice, tool, [filesystems["scratch"]], [{"args": {}}], memory=200, max_attempts=2, retry_rules=rules)
    drive(loop, all_finished(batch), timeout=120)
    job = Job.objects.get(batch=batch)
    print(f"\n{loop.backend}: {job.status} {job.reason!r}; attempts {attempts_of(job)}")
    assert job.status == "SUCCEEDED", (job.reason, attempts_of(job), log_of(job))
    first, second = attempts_of(job)
    assert first[:2] == (1, "out_of_memory") and first[3] == 200
    assert second == (2, "succeeded", 0, 400, False)
    assert "held 300 MiB" in log_of(job)
