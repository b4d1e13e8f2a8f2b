"""The seed contract (DESIGN.md): every seed route at its exact path, with exact field
names and types, plus the routes we add (submission, tools, filesystems), trailing
slashes, keyset pagination and the status filter."""

import base64
import json
import math
import re
import sqlite3
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch, Tool
from core import reason_codes
from jobs.attempts import open_attempts
from jobs.executors.base import Outcome, Started
from jobs.executors.usage import Usage
from jobs.models import Attempt, Job, Worker
from jobs.recording import record_reports
from jobs.statuses import Status
from jobs.transitions import transition
from tests.conftest import submission

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATUSES = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"}


def is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(UUID.match(value))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_time_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(ISO_UTC.match(value)))


def check_tool_ref(tool: dict[str, Any], expected) -> None:
    assert set(tool) == {"tool_id", "tool_name", "tool_description"}
    assert tool == {"tool_id": str(expected.pk), "tool_name": expected.name, "tool_description": expected.description}
    assert is_id(tool["tool_id"])


def check_batch(batch: dict[str, Any], catalog) -> None:
    # The seed's fields, and the ones we add (documented in the schema).
    assert set(batch) == {
        "batch_id",
        "batch_tool",
        "n_jobs",
        "hardware",
        "name",
        "max_attempts",
        "retry",
        "timeout_seconds",
        "priority",
        "max_running",
        "depends_on",
        "create_time",
    }
    assert is_id(batch["batch_id"])
    check_tool_ref(batch["batch_tool"], catalog["tools"][batch["batch_tool"]["tool_name"]])
    assert is_int(batch["n_jobs"])
    hardware = batch["hardware"]
    assert set(hardware) == {"filesystem_list", "cpu", "memory"}
    assert is_int(hardware["cpu"]) and hardware["cpu"] >= 1
    assert is_int(hardware["memory"]) and hardware["memory"] >= 1
    assert isinstance(hardware["filesystem_list"], list)
    for fs in hardware["filesystem_list"]:
        assert set(fs) == {"filesystem_id", "filesystem_name"}
        assert is_id(fs["filesystem_id"]) and isinstance(fs["filesystem_name"], str)
    assert isinstance(batch["name"], str)
    assert is_int(batch["max_attempts"]) and is_int(batch["timeout_seconds"])
    assert is_int(batch["priority"])
    assert set(batch["retry"]) == {"attempts", "rules"} and batch["retry"]["attempts"] == batch["max_attempts"]
    for rule in batch["retry"]["rules"]:
        assert set(rule) in ({"on_exit_code", "action"}, {"on_reason", "action"}, {"on_reason", "action", "memory_factor"})
        assert rule["action"] in ("retry", "exit")
    assert batch["max_running"] is None or (is_int(batch["max_running"]) and batch["max_running"] >= 1)
    assert isinstance(batch["depends_on"], list)
    for dependency in batch["depends_on"]:
        assert set(dependency) == {"batch_id", "condition"}
        assert is_id(dependency["batch_id"]) and dependency["condition"] in ("succeeded", "ended")
    assert is_time_or_null(batch["create_time"]) and batch["create_time"] is not None


def submit(client, catalog, **kwargs) -> dict[str, Any]:
    body = submission(catalog, **kwargs)
    response = client.post("/batches", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def finish(job_id, outcome: str = Status.SUCCEEDED, reason: str = "") -> None:
    """Walk one job through the states the executor would, via the one status writer."""
    path = [Status.RUNNABLE, Status.STARTING, Status.RUNNING, outcome]
    current = Status.SUBMITTED
    for step in path:
        assert transition(job_ids=[job_id], from_statuses=[current], to_status=step, reason=reason if step == outcome else "")
        current = step


def run_attempts(job_id, outcomes: list[Outcome]) -> Worker:
    """Run the job's attempts through the real writers, as a worker records them:
    claimed (STARTING, a LAUNCHING attempt row with its cpus and memory), started and
    ended (`record_reports`); the batch allows as many attempts as there are outcomes."""
    worker = Worker.objects.create(name="node1:7", node="node1", cpus=4, memory_mib=4096, lease_expires=timezone.now() + timedelta(hours=1))
    Batch.objects.filter(pk=Job.objects.get(pk=job_id).batch_id).update(max_attempts=len(outcomes))
    transition(job_ids=[job_id], from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    for number, outcome in enumerate(outcomes, 1):
        transition(job_ids=[job_id], from_statuses=[Status.RUNNABLE], to_status=Status.STARTING, worker=worker, attempts=F("attempts") + 1)
        open_attempts(worker=worker, executor="local", items=[(job_id, number, 1, 256)], now=timezone.now())
        elapsed = outcome.usage.elapsed_seconds if outcome.usage and outcome.usage.elapsed_seconds else 0.0
        started = Started(str(job_id), number, external_id=str(4000 + number), node="node1", time=time.time() - elapsed)
        record_reports(worker=worker, reports=[started, outcome])
    return worker


# --- seed routes -------------------------------------------------------------------


def test_get_batches_lists_the_callers_batches(alice_client, bob_client, catalog):
    mine = submit(alice_client, catalog)
    submit(bob_client, catalog)
    response = alice_client.get("/batches")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    check_batch(body[0], catalog)
    assert body[0] == mine
    assert body[0]["n_jobs"] == 2
    scratch = catalog["filesystems"]["scratch"]
    assert body[0]["hardware"] == {
        "filesystem_list": [{"filesystem_id": str(scratch.pk), "filesystem_name": "scratch"}],
        "cpu": 1,
        "memory": 256,
    }


def test_delete_batches_removes_all_the_callers_batches(alice_client, catalog):
    submit(alice_client, catalog)
    submit(alice_client, catalog)
    response = alice_client.delete("/batches")
    assert response.status_code == 204
    assert response.content == b""
    assert alice_client.get("/batches").json() == []
    assert not Batch.objects.exists() and not Job.objects.exists()


def test_get_batch_returns_status_counts(alice_client, catalog):
    batch = submit(alice_client, catalog, jobs=[{"args": {"message": str(i)}} for i in range(5)])
    ids = list(Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True))
    finish(ids[0])
    finish(ids[1], Status.FAILED, "exit code 3")
    transition(job_ids=[ids[2]], from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE)
    response = alice_client.get(f"/batches/{batch['batch_id']}")
    assert response.status_code == 200
    body = response.json()
    assert body == {"submitted": 2, "pending": 0, "runnable": 1, "starting": 0, "running": 0, "succeeded": 1, "failed": 1}
    assert all(is_int(v) for v in body.values())


def test_delete_batch_removes_one_batch(alice_client, catalog):
    keep = submit(alice_client, catalog)
    gone = submit(alice_client, catalog)
    response = alice_client.delete(f"/batches/{gone['batch_id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert alice_client.get(f"/batches/{gone['batch_id']}").status_code == 404
    assert [b["batch_id"] for b in alice_client.get("/batches").json()] == [keep["batch_id"]]
    assert not Job.objects.filter(batch_id=gone["batch_id"]).exists()


def test_get_jobs_lists_the_batch_jobs(alice_client, catalog):
    batch = submit(alice_client, catalog)
    response = alice_client.get(f"/batches/{batch['batch_id']}/jobs")
    assert response.status_code == 200
    jobs = response.json()
    assert isinstance(jobs, list) and len(jobs) == 2
    for job, message in zip(jobs, ["hello", "world"], strict=True):
        assert set(job) == {"job_id", "job_tool", "job_log_id", "job_argument_list", "status", "reason"}
        assert is_id(job["job_id"]) and is_id(job["job_log_id"])
        check_tool_ref(job["job_tool"], catalog["tools"]["echo"])
        assert job["job_argument_list"] == [{"argument_key": "message", "argument_value": message}]
        # In line: what holds it, as JobDetail says without its place in line.
        assert job["status"] == "SUBMITTED" and job["reason"].startswith("Submitted, being placed (fair share: "), job["reason"]


def test_get_job_returns_one_object(alice_client, catalog):
    batch = submit(alice_client, catalog)
    jobs = alice_client.get(f"/batches/{batch['batch_id']}/jobs").json()
    response = alice_client.get(f"/batches/{batch['batch_id']}/jobs/{jobs[0]['job_id']}")
    assert response.status_code == 200
    job = response.json()
    assert isinstance(job, dict)  # the seed shows a one-element list; DESIGN.md: an object
    seed = {"job_id", "log_id", "hardware", "args", "status", "reason", "create_time", "start_time", "stop_time"}
    assert set(job) == seed | {"batch_id", "attempts", "exit_code", "queue_position", "usage", "signal"}
    assert job["job_id"] == jobs[0]["job_id"]
    assert job["log_id"] == jobs[0]["job_log_id"]
    assert job["hardware"] == {"filesystems": [str(catalog["filesystems"]["scratch"].pk)], "memory": 256, "cpu": 1}
    assert all(is_id(fs) for fs in job["hardware"]["filesystems"])
    assert job["args"] == {"message": "hello"}
    assert job["status"] == "SUBMITTED"
    other = alice_client.get(f"/batches/{batch['batch_id']}/jobs/{jobs[1]['job_id']}").json()
    assert {job["queue_position"], other["queue_position"]} == {1, 2}, "the two jobs in line are next, by id"
    assert job["reason"].startswith(f"Submitted, being placed; {job['queue_position'] - 1} job(s) in line before it (fair share: "), job[
        "reason"
    ]
    assert ISO_UTC.match(job["create_time"])
    assert job["start_time"] is None and job["stop_time"] is None
    assert job["batch_id"] == batch["batch_id"]
    assert job["attempts"] == 0 and job["exit_code"] is None
    assert job["usage"] is None and job["signal"] is None  # no attempt has ended


ATTEMPT_FIELDS = {
    "attempt",
    "state",
    "start_time",
    "stop_time",
    "elapsed_seconds",
    "cpu_seconds",
    "max_rss_mib",
    "exit_code",
    "signal",
    "reason_code",
    "reason",
    "memory_mib",
    "cpus",
    "node",
    "executor",
    "executor_id",
}


def test_attempts_list_each_attempt_with_what_it_used(alice_client, bob_client, catalog):
    """GET /batches/<id>/jobs/<job_id>/attempts: every attempt, first to last, with how
    it ended (exit code, signal, reason_code, reason) and what it had and used; the
    JobDetail's `usage` and `signal` are the last ended attempt's."""
    batch = submit(alice_client, catalog)
    job_id = Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True)[0]
    url = f"/batches/{batch['batch_id']}/jobs/{job_id}"
    assert alice_client.get(f"{url}/attempts").json() == []
    killed = Outcome(
        str(job_id),
        1,
        succeeded=False,
        reason="killed by signal 9 (SIGKILL)",
        reason_code=reason_codes.SIGNAL,
        signal=9,
        usage=Usage(max_rss_mib=310.5, cpu_seconds=2.013, elapsed_seconds=2.107),
    )
    ok = Outcome(str(job_id), 2, succeeded=True, exit_code=0, reason_code=reason_codes.SUCCEEDED, usage=Usage(12.0, 0.031, 0.052))
    run_attempts(job_id, [killed, ok])
    response = alice_client.get(f"{url}/attempts")
    assert response.status_code == 200
    first, second = response.json()
    assert set(first) == set(second) == ATTEMPT_FIELDS
    assert first["attempt"] == 1 and first["state"] == "ENDED"
    assert (first["exit_code"], first["signal"], first["reason_code"], first["reason"]) == (
        None,
        9,
        "signal",
        "killed by signal 9 (SIGKILL)",
    )
    assert (first["max_rss_mib"], first["cpu_seconds"], first["elapsed_seconds"]) == (310.5, 2.013, 2.107)
    assert (first["memory_mib"], first["cpus"], first["node"], first["executor"], first["executor_id"]) == (
        256,
        1,
        "node1",
        "local",
        "4001",
    )
    assert ISO_UTC.match(first["start_time"]) and ISO_UTC.match(first["stop_time"])
    assert (second["attempt"], second["exit_code"], second["signal"], second["reason_code"], second["reason"]) == (
        2,
        0,
        None,
        "succeeded",
        "",
    )
    rows = Attempt.objects.filter(job_id=job_id).order_by("number")
    # Stored to the microsecond: start and end as far apart as the attempt ran.
    assert [round((a.end_time - a.start_time).total_seconds(), 1) for a in rows] == [2.1, 0.1]
    job = alice_client.get(url).json()
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2
    assert job["usage"] == {"max_rss_mib": 12.0, "cpu_seconds": 0.031, "elapsed_seconds": 0.052}
    assert job["signal"] is None
    assert bob_client.get(f"{url}/attempts").status_code == 404  # another user's job
    assert alice_client.get(f"/batches/{batch['batch_id']}/jobs/{batch['batch_id']}/attempts").status_code == 404


def test_a_job_killed_by_a_signal_says_so_with_its_usage(alice_client, catalog):
    batch = submit(alice_client, catalog)
    job_id = Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True)[0]
    killed = Outcome(str(job_id), 1, succeeded=False, reason="killed by signal 9 (SIGKILL)", reason_code="signal", signal=9, usage=Usage())
    run_attempts(job_id, [killed])
    job = alice_client.get(f"/batches/{batch['batch_id']}/jobs/{job_id}").json()
    assert (job["status"], job["signal"], job["exit_code"]) == ("FAILED", 9, None)
    assert job["usage"] == {"max_rss_mib": None, "cpu_seconds": None, "elapsed_seconds": None}  # ended, not measured


def test_job_args_come_back_in_the_types_they_were_sent(alice_client, catalog):
    """JobDetail's `args` echo what was sent: integers, numbers and booleans as JSON
    numbers and booleans, strings as strings, defaults filled in their declared type
    (they were all strings: `{"n": 3}` came back `{"n": "3"}`). The job list's
    `argument_value` stays the seed's string, what the program receives."""
    tool = Tool.objects.create(
        name="typed",
        command=["/bin/echo", "{n}", "{x}", "{y}", "{big}", "{flag}", "{s}", "{d}"],
        parameters={
            "n": {"type": "integer", "required": True},
            "x": {"type": "number", "required": True},
            "y": {"type": "number", "required": True},
            "big": {"type": "integer", "required": True},
            "flag": {"type": "boolean", "required": True},
            "s": {"type": "string", "required": True},
            "d": {"type": "integer", "default": 7},
        },
    )
    body = submission(catalog, jobs=[{"args": {"n": 3, "x": 2.5, "y": 4, "big": 10**30, "flag": True, "s": "3"}}])
    body["tool_id"] = str(tool.pk)
    batch = alice_client.post("/batches", body, format="json").json()
    listed = alice_client.get(f"/batches/{batch['batch_id']}/jobs").json()[0]
    detail = alice_client.get(f"/batches/{batch['batch_id']}/jobs/{listed['job_id']}")
    assert json.loads(detail.content)["args"] == {"n": 3, "x": 2.5, "y": 4, "big": 10**30, "flag": True, "s": "3", "d": 7}
    assert b'"y":4,' in detail.content and b'"x":2.5' in detail.content, "an integer sent as a number stays an integer"
    values = {a["argument_key"]: a["argument_value"] for a in listed["job_argument_list"]}
    assert values == {"n": "3", "x": "2.5", "y": "4", "big": str(10**30), "flag": "true", "s": "3", "d": "7"}


def test_a_job_is_found_by_its_id_alone_with_the_same_answer(alice_client, catalog):
    """GET /jobs/<id> (an addition): what GET /batches/<b>/jobs/<id> answers, for a client
    holding only the job's id (`batches logs JOB`)."""
    batch = submit(alice_client, catalog)
    job_id = alice_client.get(f"/batches/{batch['batch_id']}/jobs").json()[1]["job_id"]
    by_id = alice_client.get(f"/jobs/{job_id}")
    assert by_id.status_code == 200
    assert by_id.json() == alice_client.get(f"/batches/{batch['batch_id']}/jobs/{job_id}").json()
    assert alice_client.get(f"/jobs/{batch['batch_id']}").status_code == 404  # a batch's id is no job's


def test_job_times_and_statuses_after_it_ran(alice_client, catalog):
    batch = submit(alice_client, catalog)
    job_id = Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True)[0]
    finish(job_id, Status.FAILED, "exit code 3")
    job = alice_client.get(f"/batches/{batch['batch_id']}/jobs/{job_id}").json()
    assert job["status"] == "FAILED" and job["status"] in STATUSES
    assert job["reason"] == "exit code 3"
    assert ISO_UTC.match(job["start_time"]) and ISO_UTC.match(job["stop_time"])
    assert job["create_time"] <= job["start_time"] <= job["stop_time"]
    events = alice_client.get(f"/batches/{batch['batch_id']}/jobs/{job_id}/events").json()
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        ("SUBMITTED", "RUNNABLE"),
        ("RUNNABLE", "STARTING"),
        ("STARTING", "RUNNING"),
        ("RUNNING", "FAILED"),
    ]
    assert set(events[0]) == {"from_status", "to_status", "reason", "attempt", "time"}
    assert all(ISO_UTC.match(e["time"]) for e in events)


# --- added routes --------------------------------------------------------------------


def test_post_batches_creates_a_batch(alice_client, catalog):
    response = alice_client.post("/batches", submission(catalog), format="json")
    assert response.status_code == 201
    body = response.json()
    check_batch(body, catalog)
    assert response["Location"] == f"/batches/{body['batch_id']}"
    assert alice_client.get(response["Location"]).status_code == 200
    assert body["n_jobs"] == 2 and body["max_attempts"] == 1 and body["name"] == ""
    assert list(Job.objects.filter(batch_id=body["batch_id"]).values_list("status", flat=True)) == ["SUBMITTED"] * 2


def test_post_batches_fills_defaults_and_options(alice_client, catalog):
    body = submission(catalog, tool="fail", jobs=[{"args": {}}, {"args": {"code": 7}}])
    defaults = alice_client.post("/batches", body, format="json").json()
    assert (defaults["priority"], defaults["max_running"]) == (0, None)
    body.update(name="exit codes", max_attempts=3, timeout_seconds=60, priority=-5, max_running=1)
    created = alice_client.post("/batches", body, format="json").json()
    assert (created["name"], created["max_attempts"], created["timeout_seconds"]) == ("exit codes", 3, 60)
    assert (created["priority"], created["max_running"]) == (-5, 1)
    assert alice_client.get("/batches").json()[-1]["priority"] == -5
    assert created["depends_on"] == []
    body.update(depends_on=[{"batch_id": created["batch_id"], "condition": "ended"}])
    dependent = alice_client.post("/batches", body, format="json").json()
    check_batch(dependent, catalog)
    assert dependent["depends_on"] == [{"batch_id": created["batch_id"], "condition": "ended"}]
    jobs = alice_client.get(f"/batches/{created['batch_id']}/jobs").json()
    assert [j["job_argument_list"] for j in jobs] == [
        [{"argument_key": "code", "argument_value": "1"}],
        [{"argument_key": "code", "argument_value": "7"}],
    ]


def test_post_batches_10000_jobs_with_bulk_inserts(alice_client, catalog):
    n = 10_000
    body = submission(catalog, jobs=[{"args": {"message": f"m{i}"}} for i in range(n)])
    with CaptureQueriesContext(connection) as queries:
        response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["n_jobs"] == n
    job_inserts = [q["sql"] for q in queries.captured_queries if re.match(r'^(INSERT INTO|COPY) "?jobs_job"? ', q["sql"])]
    if connection.vendor == "postgresql":
        assert len(job_inserts) == 1 and job_inserts[0].startswith("COPY"), job_inserts  # one COPY
    else:
        # One INSERT per slice of rows, never one per job: slices of 2,000 rows, or
        # fewer where SQLite's limit on bound parameters per statement is lower.
        columns = len(Job._meta.concrete_fields)
        per_insert = min(2000, connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // columns)
        assert len(job_inserts) == math.ceil(n / per_insert), len(job_inserts)
        assert len(job_inserts) <= 10
    assert len(queries.captured_queries) < 30
    jobs = Job.objects.filter(batch_id=response.json()["batch_id"])
    assert jobs.count() == n
    assert sorted(jobs.values_list("index", flat=True)) == list(range(n))
    assert jobs.values("log_id").distinct().count() == n
    batch = Batch.objects.get(pk=response.json()["batch_id"])
    first = jobs.get(index=0)
    assert (first.status, first.reason, first.attempts, first.exit_code, first.worker_id) == ("SUBMITTED", "", 0, None, None)
    assert first.args == {"message": "m0"} and first.create_time == batch.create_time
    assert (first.start_time, first.stop_time) == (None, None)
    assert alice_client.get(f"/batches/{response.json()['batch_id']}").json()["submitted"] == n


def test_get_tools(alice_client, catalog):
    response = alice_client.get("/tools")
    assert response.status_code == 200
    tools = response.json()
    assert [t["tool_name"] for t in tools] == ["echo", "fail", "sleep", "wc"]
    echo = tools[0]
    assert set(echo) == {"tool_id", "tool_name", "tool_description", "command", "parameters", "timeout_seconds"}
    assert echo["tool_id"] == str(catalog["tools"]["echo"].pk)
    assert echo["command"] == ["/bin/echo", "{message}"]
    assert echo["parameters"] == {"message": {"type": "string", "required": True, "description": "Text to print"}}
    assert echo["timeout_seconds"] is None


def test_get_tools_hides_disabled_tools(alice_client, catalog):
    catalog["tools"]["sleep"].enabled = False
    catalog["tools"]["sleep"].save()
    assert "sleep" not in [t["tool_name"] for t in alice_client.get("/tools").json()]
    assert alice_client.get(f"/tools/{catalog['tools']['sleep'].pk}").status_code == 404


def test_get_tool(alice_client, catalog):
    tool = catalog["tools"]["fail"]
    response = alice_client.get(f"/tools/{tool.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["tool_id"] == str(tool.pk) and body["tool_name"] == "fail"
    assert body["parameters"]["code"] == {"type": "integer", "required": False, "default": 1, "description": "Exit code (0-255)"}
    assert alice_client.get("/tools/00000000-0000-0000-0000-000000000000").status_code == 404


def test_get_filesystems_lists_only_granted_ones(alice, alice_client, bob_client, catalog):
    private = catalog["filesystems"]["private"]
    assert [f["filesystem_name"] for f in alice_client.get("/filesystems").json()] == ["scratch"]
    private.users.add(alice)
    response = alice_client.get("/filesystems")
    assert response.status_code == 200
    body = response.json()
    assert [f["filesystem_name"] for f in body] == ["private", "scratch"]
    assert set(body[0]) == {"filesystem_id", "filesystem_name", "description", "path", "read_only"}
    assert body[0]["filesystem_id"] == str(private.pk) and body[0]["read_only"] is False
    assert [f["filesystem_name"] for f in bob_client.get("/filesystems").json()] == ["scratch"]


def test_filesystem_granted_through_a_group(alice, alice_client, catalog):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="lab")
    alice.groups.add(group)
    catalog["filesystems"]["private"].groups.add(group)
    assert [f["filesystem_name"] for f in alice_client.get("/filesystems").json()] == ["private", "scratch"]
    body = submission(catalog, filesystem_list=[str(catalog["filesystems"]["private"].pk)])
    assert alice_client.post("/batches", body, format="json").status_code == 201


# --- trailing slashes ------------------------------------------------------------------


def test_every_route_answers_with_a_trailing_slash(alice_client, catalog):
    batch = submit(alice_client, catalog)
    b = batch["batch_id"]
    job = alice_client.get(f"/batches/{b}/jobs/").json()[0]
    j, log = job["job_id"], job["job_log_id"]
    tool = catalog["tools"]["echo"].pk
    for url in [
        "/batches/",
        f"/batches/{b}/",
        f"/batches/{b}/jobs/",
        f"/batches/{b}/jobs/{j}/",
        f"/batches/{b}/jobs/{j}/events/",
        f"/batches/{b}/jobs/{j}/attempts/",
        f"/logs/{log}/",
        "/tools/",
        f"/tools/{tool}/",
        "/filesystems/",
    ]:
        assert alice_client.get(url).status_code == 200, url
    for url in [f"/batches/{b}/jobs/{j}/cancel/", f"/batches/{b}/cancel/", f"/batches/{b}/retry/"]:
        assert alice_client.post(url).status_code == 200, url
    assert alice_client.post("/batches/", submission(catalog), format="json").status_code == 201
    assert alice_client.delete(f"/batches/{b}/").status_code == 204
    # The one exception: deleting everything takes its exact address, since
    # `DELETE /batches/$ID` with an empty $ID is `/batches/` (test_api_hostile).
    assert alice_client.delete("/batches/").status_code == 400
    assert alice_client.delete("/batches").status_code == 204
    assert alice_client.get("/batches").json() == []


# --- pagination ----------------------------------------------------------------------------


def walk(client, url: str) -> tuple[list[Any], int]:
    """Follow Link rel="next" to the end: (all items, pages)."""
    items: list[Any] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        items.extend(response.json())
        pages += 1
        link = response.get("Link")
        if link is None:
            break
        match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
        assert match, link
        parts = urlsplit(match.group(1))
        url = f"{parts.path}?{parts.query}"
    return items, pages


def test_job_pagination_walks_every_page(alice_client, catalog):
    batch = submit(alice_client, catalog, jobs=[{"args": {"message": str(i)}} for i in range(25)])
    first = alice_client.get(f"/batches/{batch['batch_id']}/jobs?limit=10")
    assert len(first.json()) == 10 and 'rel="next"' in first["Link"]
    items, pages = walk(alice_client, f"/batches/{batch['batch_id']}/jobs?limit=10")
    assert pages == 3
    assert [j["job_argument_list"][0]["argument_value"] for j in items] == [str(i) for i in range(25)]
    # An exact multiple: the last full page has no next link... or one that leads to [].
    items, pages = walk(alice_client, f"/batches/{batch['batch_id']}/jobs?limit=25")
    assert (len(items), pages) == (25, 1)
    assert alice_client.get(f"/batches/{batch['batch_id']}/jobs").get("Link") is None


def test_batch_tool_and_filesystem_pagination(alice, alice_client, catalog):
    made = [submit(alice_client, catalog)["batch_id"] for _ in range(5)]
    items, pages = walk(alice_client, "/batches?limit=2")
    assert [b["batch_id"] for b in items] == made and pages == 3
    items, pages = walk(alice_client, "/tools?limit=1")
    assert [t["tool_name"] for t in items] == ["echo", "fail", "sleep", "wc"] and pages == 4
    catalog["filesystems"]["private"].users.add(alice)
    items, pages = walk(alice_client, "/filesystems?limit=1")
    assert [f["filesystem_name"] for f in items] == ["private", "scratch"] and pages == 2


def test_event_pagination(alice_client, catalog):
    batch = submit(alice_client, catalog)
    job_id = Job.objects.filter(batch_id=batch["batch_id"]).values_list("pk", flat=True)[0]
    finish(job_id)
    items, pages = walk(alice_client, f"/batches/{batch['batch_id']}/jobs/{job_id}/events?limit=3")
    assert [e["to_status"] for e in items] == ["RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"] and pages == 2


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", ""])
def test_bad_limit_is_400(alice_client, limit):
    response = alice_client.get(f"/batches?limit={limit}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "limit"


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["garbage!", cursor_of({}), "e30", cursor_of("a\x00b"), cursor_of(True), cursor_of(1.5), "%00"])
@pytest.mark.parametrize("url", ["/batches", "/tools", "/filesystems", "/batches/{batch}/jobs"])
def test_bad_cursor_is_400(alice_client, catalog, cursor, url):
    batch = submit(alice_client, catalog)["batch_id"]
    response = alice_client.get(f"{url.format(batch=batch)}?cursor={cursor}")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("url", ["/batches", "/batches/{batch}/jobs"])
def test_well_formed_cursor_of_the_wrong_kind_is_400(alice_client, catalog, url):
    """A cursor naming a string where the list is keyed by a UUID or an index."""
    batch = submit(alice_client, catalog)["batch_id"]
    response = alice_client.get(f"{url.format(batch=batch)}?cursor={cursor_of('not-a-key')}")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == "cursor"


def test_max_limit_is_1000(alice_client):
    assert alice_client.get("/batches?limit=1000").status_code == 200


# --- status filter ----------------------------------------------------------------------


def test_jobs_filter_by_status(alice_client, catalog):
    batch = submit(alice_client, catalog, jobs=[{"args": {"message": str(i)}} for i in range(4)])
    ids = list(Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True))
    finish(ids[1], Status.FAILED, "exit code 1")
    finish(ids[3], Status.FAILED, "exit code 2")
    url = f"/batches/{batch['batch_id']}/jobs"
    failed = alice_client.get(f"{url}?status=FAILED").json()
    assert [j["job_id"] for j in failed] == [str(ids[1]), str(ids[3])]
    assert all(j["status"] == "FAILED" for j in failed)
    # Why they failed, without one request per job.
    assert [j["reason"] for j in failed] == ["exit code 1", "exit code 2"]
    assert len(alice_client.get(f"{url}?status=SUBMITTED").json()) == 2
    assert alice_client.get(f"{url}?status=RUNNING").json() == []
    items, pages = walk(alice_client, f"{url}?status=SUBMITTED&limit=1")
    assert [j["job_id"] for j in items] == [str(ids[0]), str(ids[2])] and pages == 2


@pytest.mark.parametrize("value", ["failed", "DONE", ""])
def test_jobs_filter_rejects_an_unknown_status(alice_client, catalog, value):
    batch = submit(alice_client, catalog)
    response = alice_client.get(f"/batches/{batch['batch_id']}/jobs?status={value}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "status"
