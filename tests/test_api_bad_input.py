"""Bad submissions: each answered with a 4xx problem+json naming the field, and nothing
written."""

import io
import json
import os
import uuid
from typing import Any

import pytest
from django.test import override_settings

from batches.models import Batch
from batchsite.parsers import BoundedJSONParser
from core.problems import PayloadTooLarge
from jobs.models import Job
from tests.conftest import submission


@pytest.fixture
def nothing_written(db):
    """Asserts, after the test, that no batch or job row was added."""
    before = (Batch.objects.count(), Job.objects.count())
    yield
    assert (Batch.objects.count(), Job.objects.count()) == before


def post_json(client, body: Any):
    return client.post("/batches", body, format="json")


def assert_problem(response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == status
    assert problem["type"].startswith("urn:batches:problem:")
    if field is not None:
        fields = [e["field"] for e in problem["errors"]]
        assert field in fields, fields
        # `detail` repeats the first error, so reading it alone tells what to fix.
        first = problem["errors"][0]
        assert problem["detail"] in (f"{first['field']}: {first['message']}", first["message"])
    return problem


# --- the body as a whole --------------------------------------------------------------


@pytest.mark.parametrize("raw", [b'{"tool_id": ', b"{'tool_id': 1}", b"\xff\xfe{}", b"NaN", b'{"cpu": Infinity}', b"{}{}", b"[" * 100_000])
def test_malformed_json(alice_client, nothing_written, raw):
    response = alice_client.post("/batches", raw, content_type="application/json")
    problem = assert_problem(response, 400, "body")
    assert "Traceback" not in problem["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        rb'"message": "\ud800"',  # a lone high surrogate in an argument value
        rb'"message": "\uDFFF!"',  # a lone low one
        rb'"\ud800": "x"',  # in an argument name (which the error would echo)
    ],
)
def test_lone_surrogates_are_refused(alice_client, catalog, nothing_written, raw):
    """No database stores them (PostgreSQL refuses them in jsonb) and no renderer can
    echo them back in an error."""
    body = json.dumps(submission(catalog)).encode().replace(b'"message": "hello"', raw)
    problem = assert_problem(alice_client.post("/batches", body, content_type="application/json"), 400, "body")
    assert "surrogate" in problem["detail"]


def test_surrogate_pairs_are_characters(alice_client, catalog):
    body = json.dumps(submission(catalog)).encode().replace(b'"hello"', rb'"\ud83d\ude00 \u00e9"')
    response = alice_client.post("/batches", body, content_type="application/json")
    assert response.status_code == 201, response.content
    jobs = alice_client.get(f"/batches/{response.json()['batch_id']}/jobs").json()
    assert jobs[0]["job_argument_list"][0]["argument_value"] == "\U0001f600 \u00e9"


def test_argument_values_are_stored_byte_for_byte(alice_client, catalog):
    """What the bulk insert's text formats could mangle (COPY's escapes, JSON's): each
    value comes back exactly as sent."""
    values = ["back\\slash \\N \\\\", "tab\tnew\nline\rcr \"quotes\" 'single'", "\\x00 not a nul", "a,b;c|d", "\u00e9\u4e2d\U0001f600", " "]
    body = submission(catalog, jobs=[{"args": {"message": value}} for value in values])
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 201, response.content
    jobs = alice_client.get(f"/batches/{response.json()['batch_id']}/jobs").json()
    assert [job["job_argument_list"][0]["argument_value"] for job in jobs] == values


@pytest.mark.parametrize("body", [[1, 2], "a string", 42, True, [{"tool_id": "x"}]])
def test_body_not_an_object(alice_client, nothing_written, body):
    response = alice_client.post("/batches", body, format="json")
    assert_problem(response, 400, "body")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"]
)
def test_wrong_content_type_is_415(alice_client, catalog, nothing_written, content_type):
    response = alice_client.post("/batches", b'{"tool_id": "x"}', content_type=content_type)
    assert_problem(response, 415)


@pytest.mark.parametrize("raw", [b"{}", b"", b"null", b"   "])
def test_missing_fields(alice_client, catalog, nothing_written, raw):
    response = alice_client.post("/batches", raw, content_type="application/json")
    problem = assert_problem(response, 400)
    assert {e["field"] for e in problem["errors"]} in ({"tool_id", "hardware", "jobs"}, {"body"})


# --- types and ranges --------------------------------------------------------------------


def with_changes(catalog, **changes: Any) -> dict[str, Any]:
    body = submission(catalog)
    for dotted, value in changes.items():
        target = body
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return body


WRONG = [
    ({"tool_id": "not-a-uuid"}, "tool_id"),
    ({"tool_id": None}, "tool_id"),
    ({"tool_id": ["x"]}, "tool_id"),
    ({"hardware": "big"}, "hardware"),
    ({"hardware": None}, "hardware"),
    ({"hardware__cpu": "2"}, "hardware.cpu"),
    ({"hardware__cpu": 1.5}, "hardware.cpu"),
    ({"hardware__cpu": 2.0}, "hardware.cpu"),
    ({"hardware__cpu": True}, "hardware.cpu"),
    ({"hardware__cpu": None}, "hardware.cpu"),
    ({"hardware__cpu": 0}, "hardware.cpu"),
    ({"hardware__cpu": -1}, "hardware.cpu"),
    ({"hardware__cpu": 10**6}, "hardware.cpu"),
    ({"hardware__cpu": 10**40}, "hardware.cpu"),
    ({"hardware__memory": "256"}, "hardware.memory"),
    ({"hardware__memory": 0}, "hardware.memory"),
    ({"hardware__memory": -256}, "hardware.memory"),
    ({"hardware__memory": 10**12}, "hardware.memory"),
    ({"hardware__filesystem_list": "scratch"}, "hardware.filesystem_list"),
    ({"hardware__filesystem_list": ["scratch"]}, "hardware.filesystem_list[0]"),
    ({"jobs": "many"}, "jobs"),
    ({"jobs": {"args": {}}}, "jobs"),
    ({"jobs": []}, "jobs"),
    ({"jobs": [1]}, "jobs[0]"),
    ({"jobs": [{"args": {"message": "ok"}}, {"args": ["message"]}]}, "jobs[1].args"),
    ({"name": 5}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "nul\x00byte"}, "name"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 11}, "max_attempts"),
    ({"max_attempts": "3"}, "max_attempts"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"timeout_seconds": 10**9}, "timeout_seconds"),
]


@pytest.mark.parametrize(("changes", "field"), WRONG, ids=[f"{next(iter(c))}={next(iter(c.values()))!r}"[:60] for c, _ in WRONG])
def test_wrong_types_and_ranges(alice_client, catalog, nothing_written, changes, field):
    assert_problem(post_json(alice_client, with_changes(catalog, **changes)), 400, field)


def test_limits_come_from_settings_at_request_time(alice_client, catalog, nothing_written):
    """The service's own checks (the serializer's bounds are only the outer fence)."""
    with override_settings(BATCHES_MAX_CPU=2, BATCHES_MAX_MEMORY_MIB=512, BATCHES_MAX_JOBS_PER_BATCH=3):
        assert_problem(post_json(alice_client, with_changes(catalog, hardware__cpu=3)), 400, "hardware.cpu")
        assert_problem(post_json(alice_client, with_changes(catalog, hardware__memory=513)), 400, "hardware.memory")
        too_many = submission(catalog, jobs=[{"args": {"message": "x"}}] * 4)
        assert_problem(post_json(alice_client, too_many), 400, "jobs")


# --- references: tool, filesystems --------------------------------------------------------


def test_unknown_tool(alice_client, catalog, nothing_written):
    problem = assert_problem(post_json(alice_client, with_changes(catalog, tool_id=str(uuid.uuid4()))), 400, "tool_id")
    assert "no tool" in problem["detail"]


def test_disabled_tool(alice_client, catalog, nothing_written):
    catalog["tools"]["echo"].enabled = False
    catalog["tools"]["echo"].save()
    assert_problem(post_json(alice_client, submission(catalog)), 400, "tool_id")


def test_unknown_filesystem_is_400(alice_client, catalog, nothing_written):
    body = submission(catalog, filesystem_list=[str(catalog["filesystems"]["scratch"].pk), str(uuid.uuid4())])
    problem = assert_problem(post_json(alice_client, body), 400)
    assert problem["errors"][0]["field"].startswith("hardware.filesystem_list")
    assert "no filesystem" in problem["detail"]


def test_ungranted_filesystem_is_403(alice_client, catalog, nothing_written):
    body = submission(catalog, filesystem_list=[str(catalog["filesystems"]["private"].pk)])
    problem = assert_problem(post_json(alice_client, body), 403)
    assert "hardware.filesystem_list" in problem["detail"] and "private" in problem["detail"]


# --- arguments --------------------------------------------------------------------------------


ARGS = [
    ("echo", [{"args": {"message": "hi", "colour": "red"}}], "jobs[0].args.colour", "unknown argument"),
    ("echo", [{"args": {"message": "a"}}, {"args": {}}], "jobs[1].args.message", "required"),
    ("echo", [{"args": {"message": "a"}}, {}], "jobs[1].args.message", "required"),
    ("echo", [{"args": {"message": 5}}], "jobs[0].args.message", "must be a string"),
    ("echo", [{"args": {"message": None}}], "jobs[0].args.message", "null"),
    ("echo", [{"args": {"message": "nul\x00"}}], "jobs[0].args.message", "NUL"),
    ("fail", [{"args": {"code": "3"}}], "jobs[0].args.code", "must be an integer"),
    ("fail", [{"args": {"code": 2.5}}], "jobs[0].args.code", "must be an integer"),
    ("fail", [{"args": {"code": True}}], "jobs[0].args.code", "must be an integer"),
    ("sleep", [{"args": {"seconds": "1"}}], "jobs[0].args.seconds", "must be a number"),
    # An integer beyond any float (1 and 309 zeros) was a 500 (OverflowError).
    ("sleep", [{"args": {"seconds": 10**309}}], "jobs[0].args.seconds", "finite number"),
    ("wc", [{"args": {"file": "relative/path"}}], "jobs[0].args.file", "absolute path"),
]


@pytest.mark.parametrize(("tool", "jobs", "field", "words"), ARGS, ids=[a[2] + ":" + a[3] for a in ARGS])
def test_bad_arguments(alice_client, catalog, nothing_written, tool, jobs, field, words):
    problem = assert_problem(post_json(alice_client, submission(catalog, tool=tool, jobs=jobs)), 400, field)
    message = next(e["message"] for e in problem["errors"] if e["field"] == field)
    assert words in message


def test_every_bad_job_is_named(alice_client, catalog, nothing_written):
    jobs = [{"args": {"message": "ok"}}, {"args": {"message": 1}}, {"args": {"message": "ok"}}, {"args": {"oops": "x"}}]
    problem = assert_problem(post_json(alice_client, submission(catalog, jobs=jobs)), 400)
    assert {e["field"] for e in problem["errors"]} == {"jobs[1].args.message", "jobs[3].args.oops", "jobs[3].args.message"}


def test_path_arguments_stay_inside_the_filesystems(alice_client, catalog, tmp_path):
    scratch = catalog["filesystems"]["scratch"].path
    private = catalog["filesystems"]["private"].path
    os.makedirs(scratch, exist_ok=True)
    inside = os.path.join(scratch, "data.txt")
    os.symlink("/etc", os.path.join(scratch, "etc-link"))
    os.symlink(os.path.join(scratch, "data.txt"), os.path.join(scratch, "good-link"))
    before = (Batch.objects.count(), Job.objects.count())
    for bad in [
        f"{scratch}/../private/secret",
        f"{scratch}/../../../etc/passwd",
        f"{scratch}/etc-link/passwd",
        private + "/x",
        "/etc/passwd",
        scratch + "-sibling/x",
    ]:
        response = post_json(alice_client, submission(catalog, tool="wc", jobs=[{"args": {"file": bad}}]))
        assert_problem(response, 400, "jobs[0].args.file")
    assert (Batch.objects.count(), Job.objects.count()) == before
    for good in [inside, f"{scratch}/sub/../data.txt", f"{scratch}/good-link"]:
        response = post_json(alice_client, submission(catalog, tool="wc", jobs=[{"args": {"file": good}}]))
        assert response.status_code == 201, (good, response.content)


# --- size ------------------------------------------------------------------------------------


class LazyBody(io.RawIOBase):
    """A 100 MB request body made on demand, counting what the server reads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b" " * n
        self.read_bytes += n
        return n


def test_100_mb_body_is_refused_unread(alice_client, catalog, nothing_written):
    size = 100 * 1024 * 1024
    body = LazyBody(size)
    response = alice_client.generic("POST", "/batches", content_type="application/json", CONTENT_LENGTH=str(size), **{"wsgi.input": body})
    problem = assert_problem(response, 413)
    assert "larger than" in problem["detail"]
    assert body.read_bytes == 0


def test_real_body_over_the_limit(alice_client, catalog, nothing_written):
    body = submission(catalog, jobs=[{"args": {"message": "x" * 100}} for _ in range(40)])
    with override_settings(BATCHES_MAX_REQUEST_BYTES=2048):
        assert_problem(post_json(alice_client, body), 413)
    assert post_json(alice_client, submission(catalog)).status_code == 201
    Batch.objects.all().delete()


def test_parser_stops_reading_at_the_limit(settings):
    """Without a trustworthy Content-Length, the parser reads limit + 1 bytes, no more."""
    settings.BATCHES_MAX_REQUEST_BYTES = 1024
    stream = io.BufferedReader(LazyBody(100 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge):
        BoundedJSONParser().parse(stream)
    assert stream.raw.read_bytes <= 1024 + 1 + io.DEFAULT_BUFFER_SIZE


def test_a_million_empty_jobs_are_refused_before_any_per_job_work(alice_client, catalog, nothing_written):
    """3 MB of `{}` cost a minute of CPU and 400 MiB before its 400 (issue 9): the
    parser stops at the most objects a valid body holds."""
    body = submission(catalog)
    body["jobs"] = [{}] * 1_000_000
    response = alice_client.post("/batches", json.dumps(body), content_type="application/json")
    assert response.status_code == 413
    assert "at most 100000 jobs" in response.json()["detail"]


def test_one_job_too_many_is_refused_before_the_jobs_are_checked(alice_client, catalog, nothing_written, settings):
    settings.BATCHES_MAX_JOBS_PER_BATCH = 100
    body = submission(catalog, jobs=[{"args": {"bad": "argument"}}] * 101)
    problem = assert_problem(post_json(alice_client, body), 400, "jobs")
    # The count is refused first: no job's (bad) arguments were looked at.
    assert [error["field"] for error in problem["errors"]] == ["jobs"]
