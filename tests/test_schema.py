"""The OpenAPI schema: valid, served offline, true to the real responses, and fuzzed
in-process by schemathesis with every default check."""

import re
import uuid
from typing import Any

import jsonschema
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test.utils import override_settings
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, settings
from schemathesis.generation.modes import GenerationMode

from batchsite.wsgi import application
from jobs.batch_finished import record_finished_batches
from jobs.executors.base import Outcome
from jobs.executors.usage import Usage
from jobs.models import Delivery, FeedState, Job, Webhook
from jobs.statuses import Status
from jobs.transitions import transition
from tests.conftest import submission
from tests.test_api_contract import run_attempts

# --- the document itself -----------------------------------------------------------


@pytest.fixture
def openapi(anon_client) -> dict[str, Any]:
    response = anon_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi_3(openapi):
    assert openapi["openapi"].startswith("3.")
    # drf-spectacular ships the official OpenAPI 3.0/3.1 JSON Schemas; jsonschema checks against them.
    validate_schema(openapi)


def test_schema_lists_every_route(openapi):
    assert set(openapi["paths"]) == {
        "/batches",
        "/batches/{batch_id}",
        "/batches/{batch_id}/cancel",
        "/batches/{batch_id}/retry",
        "/batches/{batch_id}/usage",
        "/batches/{batch_id}/jobs",
        "/batches/{batch_id}/jobs/{job_id}",
        "/batches/{batch_id}/jobs/{job_id}/cancel",
        "/batches/{batch_id}/jobs/{job_id}/events",
        "/batches/{batch_id}/jobs/{job_id}/attempts",
        "/jobs/{job_id}",
        "/logs/{log_id}",
        "/tools",
        "/tools/{tool_id}",
        "/filesystems",
        "/shares",
        "/events",
        "/webhooks",
        "/webhooks/{webhook_id}",
        "/webhooks/{webhook_id}/deliveries",
    }
    assert set(openapi["paths"]["/batches"]) == {"get", "post", "delete"}
    assert set(openapi["paths"]["/batches/{batch_id}"]) == {"get", "delete"}


def test_schema_documents_problem_responses(openapi):
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("401", "429", "503"):
                assert "application/problem+json" in responses[status]["content"], (method, path, status)
            if "{" in path:
                assert "application/problem+json" in responses["404"]["content"], (method, path)
    submit = openapi["paths"]["/batches"]["post"]["responses"]
    assert {"201", "400", "401", "403", "413", "415", "429", "503"} <= set(submit)
    assert "Location" in submit["201"]["headers"]
    assert "Link" in openapi["paths"]["/batches"]["get"]["responses"]["200"]["headers"]


def test_either_auth_header_is_enough(openapi):
    security = openapi["paths"]["/batches"]["get"]["security"]
    assert {"BearerAuth": []} in security
    assert {"ApiKeyAuth": []} in security


def test_swagger_ui_is_served_offline(anon_client):
    response = anon_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "/api/schema/" in page
    external = re.findall(r"""(?:src|href)=["'](https?:)?//""", page)
    assert external == [], "Swagger UI must not load assets from a CDN"
    assets = re.findall(r"""["'](/static/drf_spectacular_sidecar/[^"']+)["']""", page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        served = anon_client.get(asset)
        assert served.status_code == 200, asset
        b"".join(served.streaming_content) if served.streaming else served.content


# --- real responses against the schema ----------------------------------------------


def _resolve(node: Any, components: dict[str, Any]) -> Any:
    """Inline every $ref, and turn OpenAPI 3.0's `nullable` into JSON Schema."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolve(components[node["$ref"].rsplit("/", 1)[1]], components)
        out = {key: _resolve(value, components) for key, value in node.items() if key not in {"nullable", "readOnly"}}
        if node.get("nullable"):
            out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_resolve(item, components) for item in node]
    return node


def _check(openapi: dict[str, Any], path: str, method: str, response: Any) -> None:
    documented = openapi["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, f"{method.upper()} {path}: {response.status_code} is not documented"
    content = documented[str(response.status_code)].get("content")
    if content is None:
        assert response.content == b""
        return
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in content, f"{method.upper()} {path}: {media_type} not in {list(content)}"
    schema = _resolve(content[media_type]["schema"], openapi["components"]["schemas"])
    body = response.content.decode() if media_type == "text/plain" else response.json()
    jsonschema.validate(body, schema, format_checker=jsonschema.FormatChecker())


def test_real_responses_match_the_schema(openapi, alice_client, anon_client, catalog):
    three = [{"args": {"message": text}} for text in ("a", "b", "c")]
    created = alice_client.post("/batches", submission(catalog, jobs=three), format="json")
    _check(openapi, "/batches", "post", created)
    batch_id = created.json()["batch_id"]
    job_ids = list(Job.objects.filter(batch_id=batch_id).values_list("pk", flat=True))
    transition(job_ids=job_ids[:1], from_statuses=[Status.SUBMITTED], to_status=Status.FAILED, reason="exit code 3", exit_code=3)
    job = Job.objects.get(pk=job_ids[0])
    measured = job_ids[2]
    usage = Usage(max_rss_mib=300.2, cpu_seconds=2.0, elapsed_seconds=2.1)
    run_attempts(
        measured, [Outcome(str(measured), 1, succeeded=False, reason="exit code 1", exit_code=1, reason_code="exit_code", usage=usage)]
    )
    tool = catalog["tools"]["echo"]
    calls = [
        ("/batches", "get", "/batches"),
        ("/batches/{batch_id}", "get", f"/batches/{batch_id}"),
        ("/batches/{batch_id}/jobs", "get", f"/batches/{batch_id}/jobs"),
        ("/batches/{batch_id}/jobs", "get", f"/batches/{batch_id}/jobs?status=FAILED"),
        ("/batches/{batch_id}/jobs", "get", f"/batches/{batch_id}/jobs?status=nope"),
        ("/batches/{batch_id}/jobs/{job_id}", "get", f"/batches/{batch_id}/jobs/{job.pk}"),
        ("/batches/{batch_id}/jobs/{job_id}/events", "get", f"/batches/{batch_id}/jobs/{job.pk}/events"),
        ("/batches/{batch_id}/jobs/{job_id}/attempts", "get", f"/batches/{batch_id}/jobs/{job.pk}/attempts"),
        ("/batches/{batch_id}/jobs/{job_id}/attempts", "get", f"/batches/{batch_id}/jobs/{measured}/attempts"),
        ("/batches/{batch_id}/jobs/{job_id}", "get", f"/batches/{batch_id}/jobs/{measured}"),
        ("/batches/{batch_id}/usage", "get", f"/batches/{batch_id}/usage"),
        ("/batches/{batch_id}/usage", "get", "/batches/00000000-0000-0000-0000-000000000000/usage"),
        ("/logs/{log_id}", "get", f"/logs/{job.log_id}"),
        ("/logs/{log_id}", "get", f"/logs/{job.log_id}?offset=-1"),
        ("/tools", "get", "/tools"),
        ("/tools/{tool_id}", "get", f"/tools/{tool.pk}"),
        ("/filesystems", "get", "/filesystems"),
        ("/batches/{batch_id}", "get", "/batches/00000000-0000-0000-0000-000000000000"),
        ("/batches/{batch_id}/retry", "post", f"/batches/{batch_id}/retry"),
        ("/batches/{batch_id}/jobs/{job_id}/cancel", "post", f"/batches/{batch_id}/jobs/{job_ids[1]}/cancel"),
        ("/batches/{batch_id}/cancel", "post", f"/batches/{batch_id}/cancel"),
    ]
    for template, method, url in calls:
        _check(openapi, template, method, getattr(alice_client, method)(url))
    record_finished_batches()
    events = alice_client.get("/events?limit=2")
    assert events.json() and "Link" in events.headers
    _check(openapi, "/events", "get", events)
    _check(openapi, "/events", "get", alice_client.get("/events?limit=1000"))  # with the batch.finished
    _check(openapi, "/events", "get", alice_client.get("/events?after=x"))
    assert "Link" in openapi["paths"]["/events"]["get"]["responses"]["200"]["headers"]
    with override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True):
        hook = alice_client.post("/webhooks", {"url": "http://127.0.0.1:9/", "event_types": ["job.failed"]}, format="json")
    _check(openapi, "/webhooks", "post", hook)
    _check(
        openapi,
        "/webhooks",
        "post",
        alice_client.post("/webhooks", {"url": "http://127.0.0.1:9/", "event_types": ["job.failed"]}, format="json"),
    )
    _check(openapi, "/webhooks", "get", alice_client.get("/webhooks"))
    Delivery.objects.create(
        webhook_id=hook.json()["id"],
        event_id=1,
        event_type="job.failed",
        batch_id=batch_id,
        payload={},
        tries=[{"time": "2026-12-05T08:00:00Z", "status": 500, "ms": 3}],
    )
    hook_id = hook.json()["id"]
    _check(openapi, "/webhooks/{webhook_id}/deliveries", "get", alice_client.get(f"/webhooks/{hook_id}/deliveries"))
    _check(openapi, "/webhooks/{webhook_id}", "delete", alice_client.delete(f"/webhooks/{hook_id}"))
    _check(openapi, "/webhooks/{webhook_id}", "delete", alice_client.delete(f"/webhooks/{hook_id}"))
    FeedState.objects.update_or_create(pk=1, defaults={"pruned_through": 10**9})
    _check(openapi, "/events", "get", alice_client.get("/events?after=1"))
    _check(openapi, "/batches", "get", anon_client.get("/batches"))
    _check(openapi, "/batches", "post", alice_client.post("/batches", {"tool_id": 1}, format="json"))
    _check(openapi, "/batches", "post", alice_client.post("/batches", "x=1", content_type="application/x-www-form-urlencoded"))
    private = submission(catalog, filesystem_list=[str(catalog["filesystems"]["private"].pk)])
    _check(openapi, "/batches", "post", alice_client.post("/batches", private, format="json"))
    dependent = {**submission(catalog), "depends_on": [{"batch_id": batch_id, "condition": "succeeded"}]}
    _check(openapi, "/batches", "post", alice_client.post("/batches", dependent, format="json"))
    _check(openapi, "/batches", "get", alice_client.get("/batches"))
    _check(openapi, "/batches/{batch_id}", "delete", alice_client.delete(f"/batches/{batch_id}"))
    _check(openapi, "/batches", "delete", alice_client.delete("/batches"))


def test_depends_on_is_documented(openapi):
    schemas = openapi["components"]["schemas"]
    submitted = schemas["BatchSubmissionRequest"]["properties"]["depends_on"]
    assert submitted["type"] == "array" and submitted["maxItems"] == 20
    assert "depends_on" not in schemas["BatchSubmissionRequest"].get("required", [])
    item = _resolve(submitted["items"], schemas)
    assert set(item["properties"]) == {"batch_id", "condition"} and set(item["required"]) == {"batch_id", "condition"}
    assert _resolve(item["properties"]["condition"], schemas)["allOf"][0]["enum"] == ["succeeded", "ended"]
    shown = schemas["Batch"]["properties"]["depends_on"]
    assert "depends_on" in schemas["Batch"]["required"]
    entry = _resolve(shown["items"], schemas)
    assert set(entry["properties"]) == {"batch_id", "condition"} and entry["properties"]["batch_id"]["format"] == "uuid"


def test_what_the_schema_allows_in_a_name_is_accepted(openapi, alice_client, catalog):
    """A name with a NUL character is refused (DRF refuses NUL in every string), and the
    schema says so: a name the schema allows is one the API accepts."""
    name = openapi["components"]["schemas"]["BatchSubmissionRequest"]["properties"]["name"]
    non_empty = next(branch for branch in name["oneOf"] if "pattern" in branch)
    assert not re.match(non_empty["pattern"], "a\x00b") and re.match(non_empty["pattern"], "a b")
    body = submission(catalog)
    body["name"] = "a\x00b"
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "name"
    body["name"] = ""
    assert alice_client.post("/batches", body, format="json").status_code == 201


# --- schemathesis, in-process --------------------------------------------------------

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


def _fill_in_positive(case, catalog: dict[str, Any]) -> None:
    """Positive cases only: what a schema cannot express, filled in the way a client
    would. A submission names a tool and filesystems that exist, with arguments the tool
    takes (their validity depends on the catalog, not on the schema), and a list cursor
    is something the server handed out (an opaque token), so it is dropped. Negative
    cases stay as generated."""
    if case.operation.label == "GET /events" and isinstance(case.query, dict):
        # A valid wait= holds the request up to 60 s: the long poll is tested in tests/test_events*.py.
        wait = str(case.query.get("wait"))
        if wait.isascii() and wait.isdigit() and int(wait) <= 60:
            case.query["wait"] = 0
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if case.operation.label == "POST /webhooks" and isinstance(case.body, dict):
        # A receiver's host is resolved: no DNS look-ups of generated names (loopback is
        # allowed for the fuzzing, see fuzz_user); and a user has at most 20 webhooks.
        case.body["url"] = "http://127.0.0.1:9/hook"
        Webhook.objects.all().delete()
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    if case.operation.label == "POST /batches" and case.headers and "idempotency-key" in {name.lower() for name in case.headers}:
        # A client uses a fresh key for each new submission (the same key with another
        # body is refused, 422, as it should be).
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if case.operation.label == "POST /batches" and isinstance(case.body, dict):
        case.body["tool_id"] = str(catalog["tools"]["echo"].pk)
        # Batches depended on are ids the server handed out, as a cursor is.
        case.body.pop("depends_on", None)
        # Attempts are given once: as max_attempts or in retry (both must agree).
        if isinstance(case.body.get("retry"), dict):
            case.body.pop("max_attempts", None)
        hardware = case.body.get("hardware")
        if isinstance(hardware, dict):
            hardware["filesystem_list"] = [str(catalog["filesystems"]["scratch"].pk)]
        jobs = case.body.get("jobs")
        if isinstance(jobs, list):
            case.body["jobs"] = [{"args": {"message": f"job {index}"}} for index, _ in enumerate(jobs[:50])]


@pytest.fixture
def fuzz_user(alice_client, catalog):
    """A real user with a real token, and a catalog so submissions can succeed."""
    # The WSGI app runs in this thread on the test's connection: Django must not close
    # that connection (and lose the test transaction) at the end of each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    with override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True):
        yield {"Authorization": f"Bearer {alice_client.token}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_schemathesis(case, fuzz_user, catalog):
    _fill_in_positive(case, catalog)
    case.call_and_validate(headers=fuzz_user)


def test_the_submissions_integer_bounds_are_in_the_schema(openapi):
    """Schemathesis sent a max_running past the 32-bit column: the schema states every
    integer field's bounds, so a client learns them before the 400."""
    body = openapi["paths"]["/batches"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    fields = openapi["components"]["schemas"][name]["properties"]
    assert (fields["max_running"]["minimum"], fields["max_running"]["maximum"]) == (1, 1_000_000)
    assert (fields["priority"]["minimum"], fields["priority"]["maximum"]) == (-1_000_000, 1_000_000)
