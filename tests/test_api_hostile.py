"""What a hostile client found in a second round (issue 9): work bounded by the size of
the answer as well as the body, defaults held to the same rules as given values, repeats
that report what they did, and methods refused as 405 problems."""

import io
import json

import pytest
from django.test import Client

import jobs.services
from batches.models import Batch, Tool
from batchsite.wsgi import application
from tests.conftest import submission

pytestmark = pytest.mark.django_db


def test_unknown_arguments_of_one_job_are_named_up_to_a_cap(alice_client, catalog):
    """200,000 unknown argument names in one job were 200,000 errors (17.7 MB, 8 s; 1.5M
    took 42 s): the answer names a bounded number and says how many there were."""
    args = {"message": "x", **{f"k{i}": i for i in range(200_000)}}
    response = alice_client.post("/batches", submission(catalog, jobs=[{"args": args}]), format="json")
    assert response.status_code == 400
    problem = response.json()
    assert 1 <= len(problem["errors"]) <= 50
    assert problem["errors"][0]["field"] == "jobs[0].args.k0"
    assert any("200000 unknown arguments" in e["message"] for e in problem["errors"]), problem["errors"][-1]
    assert len(response.content) < 20_000


def test_a_default_path_is_held_inside_the_batch_filesystems(alice_client, catalog, tmp_path):
    """A path parameter's default outside every filesystem of the batch ran as given (a
    value given explicitly is refused): defaults are checked like given values."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tool = Tool.objects.create(
        name="lister", command=["/bin/ls", "{where}"], parameters={"where": {"type": "path", "default": str(outside)}}
    )
    body = submission(catalog, jobs=[{"args": {}}])
    body["tool_id"] = str(tool.pk)
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == "jobs[0].args.where"
    assert "default" in response.json()["errors"][0]["message"]
    inside = catalog["filesystems"]["scratch"].path
    tool.parameters = {"where": {"type": "path", "default": inside}}
    tool.save()
    assert alice_client.post("/batches", body, format="json").status_code == 201


def test_delete_all_batches_refuses_query_parameters(alice_client, catalog):
    """`DELETE /batches?status=FAILED` deleted every batch: a filter it does not have
    is a 400 on this route, not ignored."""
    assert alice_client.post("/batches", submission(catalog), format="json").status_code == 201
    response = alice_client.delete("/batches?status=FAILED")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "status"
    assert Batch.objects.filter(deleted_at__isnull=True).count() == 1


def test_a_repeated_batch_cancel_reports_no_change_and_a_retry_says_why_it_waits(alice_client, catalog):
    """The second cancel of a batch still being cancelled said the same jobs changed
    again; a retry meanwhile said they were all 'stopping' when most were queued jobs
    the sweep had not reached."""
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(10)])
    batch_id = alice_client.post("/batches", body, format="json").json()["batch_id"]
    # Cancels as the route makes them, with a chunk of 3 so that jobs stay queued.
    first = jobs.services.cancel_batch(batch=Batch.objects.get(pk=batch_id), chunk=3)
    assert (first.changed, first.stopping) == (10, 0)
    second = jobs.services.cancel_batch(batch=Batch.objects.get(pk=batch_id), chunk=3)
    assert (second.changed, second.stopping) == (0, 0)
    retry = alice_client.post(f"/batches/{batch_id}/retry")
    assert retry.status_code == 409
    assert "4 job(s) are still to be cancelled" in retry.json()["detail"], retry.json()["detail"]
    assert "stopping" not in retry.json()["detail"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_probes_refuse_other_methods_with_405(path, method):
    """They answered 403 'CSRF cookie not set.' (CSRF checked as a browser-less client
    meets it; Django's test client skips the check unless told)."""
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert response.status_code == 405
    assert "GET" in response["Allow"]
    assert response["Content-Type"] == "application/problem+json"


def test_a_chunked_body_over_the_limit_is_the_same_problem_as_a_long_one(settings):
    """413 had the type `request-too-large` for a chunked body and `too-large` for one
    with a Content-Length: one problem, one type."""
    settings.BATCHES_MAX_REQUEST_BYTES = 10
    answers = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/batches",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(b"{" + b" " * 100 + b"}"),
        "wsgi.input_terminated": True,
    }
    body = b"".join(application(environ, lambda status, headers: answers.append(status)))
    assert answers == ["413 Request too large"]
    assert json.loads(body)["type"] == "urn:batches:problem:too-large"


def test_a_nul_in_a_query_parameter_is_refused_before_any_query(alice_client, admin_client):
    """PostgreSQL's text takes no NUL: an admin filter `?status__exact=%00` was a 500
    (DataError). The API answers a 400 naming the parameter; the admin shows its own
    notice about a wrong filter."""
    response = alice_client.get("/batches?limit=%00")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "limit"
    for path in ("/admin/jobs/job/?status__exact=%00", "/admin/batches/batch/?name=%00", "/admin/jobs/attempt/?q=%00"):
        answer = admin_client.get(path)
        assert answer.status_code == 302 and answer["Location"].endswith("?e=1"), path


@pytest.mark.parametrize(("method", "path"), [("post", "/api/schema/"), ("get", "/api/schema/?format=xml")])
def test_the_schemas_errors_are_json_like_every_other(alice_client, method, path):
    """They were YAML under a problem+json content type."""
    response = getattr(alice_client, method)(path)
    assert response.status_code in (404, 405)
    assert response["Content-Type"] == "application/problem+json"
    assert json.loads(response.content)["status"] == response.status_code


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda body: body["hardware"].update(gpu=1), "hardware.gpu"),
        (lambda body: body.update(priority="high"), "priority"),
        (lambda body: body["jobs"][0].update(arg={"message": "typo"}), "jobs[0].arg"),
    ],
)
def test_a_field_the_submission_does_not_have_is_named_not_dropped(alice_client, catalog, change, field):
    """`"hardware": {..., "gpu": 1}` answered 201 and the jobs ran with no GPU: a field
    the service does not know is refused by name (the schema says no others)."""
    body = submission(catalog)
    change(body)
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert not Batch.objects.exists()


def test_ids_are_strings(alice_client, catalog):
    """`"tool_id": 5` was read as the uuid 00000000-0000-0000-0000-000000000005."""
    body = submission(catalog)
    body["tool_id"] = 5
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "tool_id"
    assert "00000000" not in response.content.decode()


def test_a_status_filter_given_twice_is_refused(alice_client, catalog):
    """`?status=FAILED&status=SUCCEEDED` used the last value, silently."""
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    response = alice_client.get(f"/batches/{batch_id}/jobs?status=FAILED&status=SUCCEEDED")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "status"


def test_options_points_to_the_schema_instead_of_describing_the_wrong_shape(alice_client):
    """OPTIONS /batches described the POST body with the answer's serializer (batch_id
    and n_jobs required, no tool_id or jobs)."""
    answer = alice_client.options("/batches").json()
    assert "actions" not in answer
    assert answer["schema"] == "/api/schema/"


def test_a_repeated_cancel_does_not_count_jobs_already_stopping(alice_client, catalog):
    """A job that takes its time to stop (it ignores SIGTERM for the kill grace) was
    counted as changed and stopping by every repeat of the batch's cancel."""
    from jobs.models import Job
    from jobs.statuses import Status
    from jobs.transitions import transition

    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    running = Job.objects.filter(batch_id=batch_id).order_by("index").first()
    for source, target in ((Status.SUBMITTED, Status.RUNNABLE), (Status.RUNNABLE, Status.STARTING), (Status.STARTING, Status.RUNNING)):
        assert transition(job_ids=[running.pk], from_statuses=[source], to_status=target)
    assert alice_client.post(f"/batches/{batch_id}/cancel").json() == {"changed": 2, "stopping": 1}
    for _ in range(2):
        assert alice_client.post(f"/batches/{batch_id}/cancel").json() == {"changed": 0, "stopping": 0}
    assert alice_client.post(f"/batches/{batch_id}/jobs/{running.pk}/cancel").json() == {"changed": 0, "stopping": 0}


def test_a_query_parameter_given_twice_is_refused_on_every_route(alice_client, catalog):
    """`?limit=1&limit=2` and a log's `?offset=1&offset=2` used the last value."""
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    log_id = alice_client.get(f"/batches/{batch_id}/jobs").json()[0]["job_log_id"]
    for path in ("/batches?limit=1&limit=2", f"/logs/{log_id}?offset=1&offset=2"):
        response = alice_client.get(path)
        assert response.status_code == 400 and response.json()["errors"][0]["message"] == "give it once", path


def test_an_argument_named_args_is_named_as_itself(alice_client, catalog):
    """`{"args": {"args": 1}}` reported the field `jobs[0].args`, as if the whole object
    were wrong; and a body nested too deep or holding a 5,000-digit integer got Python's
    own advice (sys.set_int_max_str_digits)."""
    response = alice_client.post("/batches", submission(catalog, jobs=[{"args": {"message": "x", "args": 1}}]), format="json")
    assert response.json()["errors"][0]["field"] == "jobs[0].args.args"
    huge = b'{"tool_id": "x", "n": ' + b"9" * 5000 + b"}"
    response = alice_client.post("/batches", huge, content_type="application/json")
    assert response.status_code == 400 and "sys." not in response.json()["detail"] and "4300 digits" in response.json()["detail"]


def test_the_schema_accepts_typed_job_arguments(alice_client):
    """`oneOf: [string, integer, number, boolean]` refused every integer (it is both an
    integer and a number)."""
    import jsonschema

    schema = alice_client.get("/api/schema/?format=json").json()
    args = schema["components"]["schemas"]["JobDetail"]["properties"]["args"]
    jsonschema.validate({"n": 3, "x": 2.5, "flag": True, "s": "3"}, args)


def test_deleting_every_batch_takes_exactly_its_own_address_and_no_body(alice_client, catalog):
    """`DELETE /batches/$ID` with an empty $ID (and `/batches//`, `/batches/%2F`) reached
    the delete-all route through the trailing-slash rule, as did a body that looked like a
    filter (`{"batch_ids": [...]}`): each deleted every batch of the caller."""
    batch_id = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    for path in ("/batches/", "/batches//", "/batches/%2F"):
        response = alice_client.delete(path)
        assert response.status_code in (400, 404), (path, response.status_code)
    response = alice_client.delete("/batches", {"batch_ids": [batch_id]}, format="json")
    assert response.status_code == 400
    assert Batch.objects.filter(deleted_at__isnull=True).count() == 1
    assert alice_client.delete("/batches").status_code == 204


def test_a_key_whose_batch_was_deleted_is_forgotten(alice_client, catalog):
    """Repeating a submission with its Idempotency-Key after deleting the batch, while the
    batch's rows were still being removed, was a 500."""
    from jobs.removal import delete_batches

    body = submission(catalog)
    first = alice_client.post("/batches", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    # As the route does, in chunks of one job: the batch's row is still there.
    delete_batches(batches=Batch.objects.filter(pk=first.json()["batch_id"]), chunk=1)
    assert Batch.objects.filter(pk=first.json()["batch_id"]).exists()
    again = alice_client.post("/batches", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201 and again.json()["batch_id"] != first.json()["batch_id"]


@pytest.mark.parametrize("value", [11_461_474_775, 2**31, 1_000_001])
def test_a_max_running_beyond_any_pool_is_a_400_not_a_500(alice_client, catalog, value):
    """`max_running: 11461474775` (found by schemathesis in CI) overflowed the 32-bit
    column on PostgreSQL: a 500. It is bounded like `priority`, named in a 400, and the
    schema says the maximum."""
    body = {**submission(catalog), "max_running": value}
    response = alice_client.post("/batches", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == "max_running"
    assert "1000000" in response.json()["errors"][0]["message"]
    assert Batch.objects.count() == 0
