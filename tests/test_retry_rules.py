"""Retry rules at submission (`retry: {"attempts": N, "rules": [...]}`): what is
accepted, stored and shown, and every refusal naming its field."""

import pytest

from batches.models import Batch
from tests.conftest import submission

RULES = [
    {"on_exit_code": [3, 4, 3], "action": "retry"},
    {"on_reason": "out_of_memory", "action": "retry", "memory_factor": 2},
    {"on_exit_code": [1], "action": "exit"},
]


def test_rules_are_stored_and_shown_with_their_attempts(alice_client, catalog):
    body = submission(catalog, tool="fail", jobs=[{"args": {"code": 3}}])
    body["retry"] = {"attempts": 3, "rules": RULES}
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 201, response.content
    shown = response.json()
    expected = [
        {"on_exit_code": [3, 4], "action": "retry"},
        {"on_reason": "out_of_memory", "action": "retry", "memory_factor": 2.0},
        {"on_exit_code": [1], "action": "exit"},
    ]
    assert shown["retry"] == {"attempts": 3, "rules": expected}
    assert shown["max_attempts"] == 3
    assert alice_client.get("/batches").json()[-1]["retry"] == shown["retry"]
    assert Batch.objects.get(pk=shown["batch_id"]).retry_rules == expected


def test_without_retry_max_attempts_alone_and_no_rules(alice_client, catalog):
    body = submission(catalog)
    body["max_attempts"] = 2
    shown = alice_client.post("/batches", body, format="json").json()
    assert shown["retry"] == {"attempts": 2, "rules": []}


def test_max_attempts_and_retry_attempts_agreeing_is_accepted(alice_client, catalog):
    body = submission(catalog)
    body.update(max_attempts=2, retry={"attempts": 2})
    assert alice_client.post("/batches", body, format="json").json()["retry"] == {"attempts": 2, "rules": []}


@pytest.mark.parametrize(
    ("retry", "field", "message"),
    [
        ({"attempts": 0}, "retry.attempts", "greater than or equal to 1"),
        ({"attempts": 2, "rules": [{"action": "retry"}]}, "retry.rules[0]", "exactly one of on_exit_code and on_reason"),
        (
            {"attempts": 2, "rules": [{"on_exit_code": [1], "on_reason": "timeout", "action": "retry"}]},
            "retry.rules[0]",
            "exactly one",
        ),
        ({"attempts": 2, "rules": [{"on_exit_code": [], "action": "retry"}]}, "retry.rules[0].on_exit_code", "at least 1"),
        (
            {"attempts": 2, "rules": [{"on_exit_code": [256], "action": "retry"}]},
            "retry.rules[0].on_exit_code[0]",
            "less than or equal to 255",
        ),
        ({"attempts": 2, "rules": [{"on_exit_code": ["3"], "action": "retry"}]}, "retry.rules[0].on_exit_code[0]", "integer"),
        ({"attempts": 2, "rules": [{"on_reason": "oom", "action": "retry"}]}, "retry.rules[0].on_reason", "must be one of: exit_code"),
        (
            {"attempts": 2, "rules": [{"on_reason": "node_failure", "action": "exit"}]},
            "retry.rules[0].on_reason",
            "infrastructure failure: it is always requeued",
        ),
        ({"attempts": 2, "rules": [{"on_reason": "cancelled", "action": "retry"}]}, "retry.rules[0].on_reason", "never retried"),
        ({"attempts": 2, "rules": [{"on_exit_code": [1], "action": "again"}]}, "retry.rules[0].action", "not a valid choice"),
        (
            {"attempts": 2, "rules": [{"on_exit_code": [1], "action": "retry", "memory_factor": 2}]},
            "retry.rules[0].memory_factor",
            "only an on_reason out_of_memory rule",
        ),
        (
            {"attempts": 2, "rules": [{"on_reason": "out_of_memory", "action": "exit", "memory_factor": 2}]},
            "retry.rules[0].memory_factor",
            "whose action is retry",
        ),
        (
            {"attempts": 2, "rules": [{"on_reason": "out_of_memory", "action": "retry", "memory_factor": 1}]},
            "retry.rules[0].memory_factor",
            "must be above 1",
        ),
        (
            {"attempts": 2, "rules": [{"on_reason": "out_of_memory", "action": "retry", "memory_factor": 100}]},
            "retry.rules[0].memory_factor",
            "less than or equal to 16",
        ),
        ({"attempts": 2, "rules": [{"on_exit_code": [1], "action": "retry", "when": "always"}]}, "retry.rules[0].when", "unknown field"),
        ({"attempts": 2, "rules": [{"on_exit_code": [1], "action": "retry"}] * 21}, "retry.rules", "no more than 20"),
        ({"attempts": 2, "tries": 3}, "retry.tries", "unknown field"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_field(alice_client, catalog, retry, field, message):
    body = submission(catalog)
    body["retry"] = retry
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors
    assert not Batch.objects.exists()


def test_max_attempts_disagreeing_with_retry_attempts_is_refused(alice_client, catalog):
    body = submission(catalog)
    body.update(max_attempts=3, retry={"attempts": 2})
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "retry.attempts", "message": "is 2 but max_attempts is 3: give one of the two"}]


def test_a_users_retry_starts_each_job_over(alice_client, catalog):
    """Attempts charged, infrastructure requeues and a memory a rule raised are all reset:
    the job runs again as submitted."""
    from jobs.models import Job
    from jobs.statuses import Status

    body = submission(catalog, jobs=[{"args": {"message": "x"}}])
    batch = alice_client.post("/batches", body, format="json").json()["batch_id"]
    Job.objects.filter(batch_id=batch).update(status=Status.FAILED, charged_attempts=2, requeues=3, memory_mib=1024)
    assert alice_client.post(f"/batches/{batch}/retry").json() == {"changed": 1}
    job = Job.objects.get(batch_id=batch)
    assert (job.charged_attempts, job.requeues, job.memory_mib) == (0, 0, None)
