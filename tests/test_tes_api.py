"""GA4GH TES routes without running anything (issue 23): the spec's shapes in each view,
listing with its filters and pages, tenants apart, who may create tasks, what is
refused at creation, and HTTP Basic with a token as the password."""

import base64

import pytest
from rest_framework.test import APIClient

from accounts.capabilities import allow_commands
from accounts.services import issue_token
from batches.models import Image
from jobs.models import Job
from jobs.statuses import Status
from jobs.transitions import transition
from tests.conftest import make_client

pytestmark = pytest.mark.django_db

TES = "/ga4gh/tes/v1"
ECHO = {"image": "alpine", "command": ["echo", "hello"]}


@pytest.fixture
def tes(alice):
    allow_commands(user=alice)
    Image.objects.create(pattern="alpine*", root="", position=0)
    return make_client(alice)


def create(client, **document) -> str:
    response = client.post(f"{TES}/tasks", {"executors": [ECHO], **document}, format="json")
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"id"}
    return response.json()["id"]


def test_service_info_names_tes_1_1(anon_client, tes):
    info = tes.get(f"{TES}/service-info").json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert {"id", "name", "organization", "version", "storage", "tesResources_backend_parameters"} <= set(info)
    assert anon_client.get(f"{TES}/service-info").status_code == 401


def test_the_three_views(tes):
    task_id = create(
        tes,
        name="views",
        description="d",
        tags={"project": "x"},
        inputs=[{"path": "/data/in", "content": "secret content"}],
        resources={"cpu_cores": 1, "ram_gb": 0.5},
    )
    assert tes.get(f"{TES}/tasks/{task_id}").json() == {"id": task_id, "state": "QUEUED"}
    basic = tes.get(f"{TES}/tasks/{task_id}?view=BASIC").json()
    assert basic["name"] == "views" and basic["description"] == "d" and basic["tags"] == {"project": "x"}
    assert basic["executors"] == [ECHO] and basic["inputs"] == [{"path": "/data/in"}]
    assert basic["logs"] == [] and basic["creation_time"].endswith("Z")
    full = tes.get(f"{TES}/tasks/{task_id}?view=FULL").json()
    assert full["inputs"] == [{"path": "/data/in", "content": "secret content"}]
    job = Job.objects.get(batch_id=task_id)
    assert job.batch.memory == 512 and job.batch.cpu == 1
    assert tes.get(f"{TES}/tasks/{task_id}?view=ALL").status_code == 400


def test_states_follow_the_job_one_way(tes):
    task_id = create(tes)
    job = Job.objects.get(batch_id=task_id)
    seen = []
    for source, target in ((Status.SUBMITTED, Status.RUNNABLE), (Status.RUNNABLE, Status.STARTING), (Status.STARTING, Status.RUNNING)):
        transition(job_ids=[job.pk], from_statuses=[source], to_status=target)
        seen.append(tes.get(f"{TES}/tasks/{task_id}").json()["state"])
    assert seen == ["QUEUED", "INITIALIZING", "RUNNING"]
    assert tes.post(f"{TES}/tasks/{task_id}:cancel").json() == {}
    assert tes.get(f"{TES}/tasks/{task_id}").json()["state"] == "CANCELING"
    queued = create(tes)
    tes.post(f"{TES}/tasks/{queued}:cancel")
    assert tes.get(f"{TES}/tasks/{queued}").json()["state"] == "CANCELED"
    assert tes.get(f"{TES}/tasks?state=CANCELED").json()["tasks"] == [{"id": queued, "state": "CANCELED"}]
    assert tes.get(f"{TES}/tasks?state=CANCELING").json()["tasks"] == [{"id": task_id, "state": "CANCELING"}]


def test_listing_pages_and_filters(tes):
    ids = [create(tes, name=f"run-{n}", tags={"n": str(n), **({"even": ""} if n % 2 == 0 else {})}) for n in range(5)]
    seen, token, pages = [], None, 0
    while True:
        answer = tes.get(f"{TES}/tasks?page_size=2" + (f"&page_token={token}" if token else "")).json()
        seen += [t["id"] for t in answer["tasks"]]
        pages += 1
        token = answer.get("next_page_token")
        if not token:
            break
    assert seen == ids[::-1] and pages == 3
    assert [t["id"] for t in tes.get(f"{TES}/tasks?name_prefix=run-3").json()["tasks"]] == [ids[3]]
    assert [t["id"] for t in tes.get(f"{TES}/tasks?tag_key=n&tag_value=1").json()["tasks"]] == [ids[1]]
    assert {t["id"] for t in tes.get(f"{TES}/tasks?tag_key=even").json()["tasks"]} == {ids[0], ids[2], ids[4]}
    assert tes.get(f"{TES}/tasks?tag_key=even&tag_value=x").json()["tasks"] == []
    assert len(tes.get(f"{TES}/tasks?state=QUEUED").json()["tasks"]) == 5
    assert tes.get(f"{TES}/tasks?state=COMPLETE").json()["tasks"] == []
    assert tes.get(f"{TES}/tasks?page_size=2048").status_code == 400
    assert tes.get(f"{TES}/tasks?page_token=garbage!").status_code == 400
    full = tes.get(f"{TES}/tasks?view=FULL&page_size=1").json()["tasks"][0]
    assert full["name"] == "run-4" and full["executors"] == [ECHO]


def test_tenants_are_apart(tes, bob):
    task_id = create(tes)
    allow_commands(user=bob)
    bob_tes = make_client(bob)
    assert bob_tes.get(f"{TES}/tasks/{task_id}").status_code == 404
    assert bob_tes.post(f"{TES}/tasks/{task_id}:cancel").status_code == 404
    assert bob_tes.get(f"{TES}/tasks").json() == {"tasks": []}
    assert Job.objects.get(batch_id=task_id).status == Status.SUBMITTED
    # The task is alice's batch like any other: our API shows it to her.
    assert make_client(bob).get(f"/batches/{task_id}").status_code == 404


def test_only_users_allowed_to_run_commands_create_tasks(bob):
    Image.objects.create(pattern="alpine*", root="")
    response = make_client(bob).post(f"{TES}/tasks", {"executors": [ECHO]}, format="json")
    assert response.status_code == 403
    assert "allow_commands" in response.json()["detail"]
    allow_commands(user=bob)
    assert make_client(bob).post(f"{TES}/tasks", {"executors": [ECHO]}, format="json").status_code == 200
    allow_commands(user=bob, revoke=True)
    assert make_client(bob).post(f"{TES}/tasks", {"executors": [ECHO]}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"executors": []}, "executors"),
        ({"executors": [{"image": "alpine", "command": []}]}, "executors[0].command"),
        ({"executors": [{"image": "alpine", "command": "echo hi"}]}, "executors[0].command"),
        ({"executors": [{"image": "ubuntu:20.04", "command": ["true"]}]}, "executors[0].image"),
        ({"executors": [{**ECHO, "workdir": "relative"}]}, "executors[0].workdir"),
        ({"executors": [ECHO], "inputs": [{"path": "/data/../etc/x", "content": "x"}]}, "inputs[0].path"),
        ({"executors": [ECHO], "inputs": [{"path": "/top", "content": "x"}]}, "inputs[0].path"),
        ({"executors": [ECHO], "inputs": [{"path": "/proc/x/y", "content": "x"}]}, "inputs[0].path"),
        ({"executors": [ECHO], "outputs": [{"path": "/out/*.txt", "url": "file:///tmp/x"}]}, "outputs[0].path_prefix"),
        ({"executors": [ECHO], "resources": {"cpu_cores": 10_000}}, "resources.cpu_cores"),
        ({"executors": [ECHO], "resources": {"ram_gb": 1e9}}, "resources.ram_gb"),
        (
            {"executors": [ECHO], "resources": {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}},
            "resources.backend_parameters",
        ),
        ({"executors": [ECHO], "tags": {"a": 1}}, "tags"),
    ],
)
def test_what_is_refused_at_creation_names_its_field(tes, document, field):
    response = tes.post(f"{TES}/tasks", document, format="json")
    assert response.status_code == 400, response.content
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert Job.objects.count() == 0


def test_unsupported_backend_parameters_are_ignored_and_said_when_not_strict(tes):
    task_id = create(tes, resources={"backend_parameters": {"VmSize": "Standard_D64_v3"}})
    full = tes.get(f"{TES}/tasks/{task_id}?view=FULL").json()
    assert "backend_parameters" not in full["resources"]
    assert full["logs"][0]["system_logs"] == ["backend parameters not supported here, ignored: VmSize"]


def test_basic_auth_with_the_token_as_password(alice, tes):
    token = issue_token(user=alice, name="py-tes")[1]
    client = APIClient()
    good = base64.b64encode(f"alice:{token}".encode()).decode()
    assert client.get(f"{TES}/tasks", HTTP_AUTHORIZATION=f"Basic {good}").status_code == 200
    anyone = base64.b64encode(f":{token}".encode()).decode()
    assert client.get(f"{TES}/tasks", HTTP_AUTHORIZATION=f"Basic {anyone}").status_code == 200
    wrong_user = base64.b64encode(f"bob:{token}".encode()).decode()
    assert client.get(f"{TES}/tasks", HTTP_AUTHORIZATION=f"Basic {wrong_user}").status_code == 401
    wrong = base64.b64encode(b"alice:bt_nope").decode()
    assert client.get(f"{TES}/tasks", HTTP_AUTHORIZATION=f"Basic {wrong}").status_code == 401
    # Basic is for the TES routes only: our own API keeps to Bearer and X-API-Key.
    assert client.get("/batches", HTTP_AUTHORIZATION=f"Basic {good}").status_code == 401


def test_a_task_is_a_batch_that_ordinary_submissions_cannot_use(tes, alice_client, catalog):
    task_id = create(tes)
    (batch,) = [b for b in alice_client.get("/batches").json() if b["batch_id"] == task_id]
    assert batch["batch_tool"]["tool_name"] == "task" and batch["n_jobs"] == 1
    assert alice_client.get(f"/batches/{task_id}").json()["submitted"] == 1
    tool_ids = [t["tool_id"] for t in alice_client.get("/tools").json()]
    task_tool = Job.objects.get(batch_id=task_id).batch.tool
    assert str(task_tool.pk) not in tool_ids
    body = {"tool_id": str(task_tool.pk), "hardware": {"cpu": 1, "memory": 64, "filesystem_list": []}, "jobs": [{"args": {}}]}
    assert alice_client.post("/batches", body, format="json").status_code == 400


def test_tags_filter_as_the_compliance_suite_sends_it(tes):
    """Four keys with four values in another order than the task's (the GA4GH suite's
    filter_task_by_tag.yml); a key without a value matches any value; more keys than
    values pair from the start."""
    task_id = create(tes, tags={"foo": "bar", "baz": "bat", "lorem": "ipsum", "task": "create"})
    create(tes, tags={"foo": "bar"})
    query = "tag_key=foo&tag_key=lorem&tag_key=task&tag_key=baz&tag_value=bar&tag_value=ipsum&tag_value=create&tag_value=bat"
    answer = tes.get(f"{TES}/tasks?view=BASIC&{query}")
    assert answer.status_code == 200, answer.content
    assert [t["id"] for t in answer.json()["tasks"]] == [task_id]
    query = "tag_key=foo&tag_key=lorem&tag_key=baz&tag_value=bar&tag_value=ipsum"
    assert [t["id"] for t in tes.get(f"{TES}/tasks?{query}").json()["tasks"]] == [task_id]
    assert tes.get(f"{TES}/tasks?tag_key=foo&tag_value=wrong_value").json()["tasks"] == []


def test_operators_grant_running_commands_on_the_users_admin_page(admin_client, bob):
    """The permission is on a user's page in the admin, and granting it there lets the
    user create tasks (the same permission `allow_commands` grants)."""
    from django.contrib.auth.models import Permission

    page = admin_client.get(f"/admin/auth/user/{bob.pk}/change/")
    assert page.status_code == 200
    assert "Can run their own commands (GA4GH TES tasks)" in page.content.decode()
    bob.user_permissions.add(Permission.objects.get(codename="run_commands"))
    Image.objects.create(pattern="alpine*", root="")
    assert make_client(bob).post(f"{TES}/tasks", {"executors": [ECHO]}, format="json").status_code == 200


@pytest.mark.parametrize(
    ("status", "cancel", "code", "state"),
    [
        (Status.SUBMITTED, False, None, "QUEUED"),
        (Status.PENDING, False, None, "QUEUED"),
        (Status.RUNNABLE, False, None, "QUEUED"),
        (Status.STARTING, False, None, "INITIALIZING"),
        (Status.RUNNING, False, None, "RUNNING"),
        (Status.RUNNING, True, None, "CANCELING"),
        (Status.SUCCEEDED, False, "succeeded", "COMPLETE"),
        (Status.FAILED, True, "cancelled", "CANCELED"),
        (Status.FAILED, False, "cancelled", "CANCELED"),
        (Status.FAILED, False, "exit_code", "EXECUTOR_ERROR"),
        (Status.FAILED, False, "signal", "EXECUTOR_ERROR"),
        (Status.FAILED, False, "worker_lost", "SYSTEM_ERROR"),
        (Status.FAILED, False, "node_failure", "SYSTEM_ERROR"),
        (Status.FAILED, False, "out_of_memory", "SYSTEM_ERROR"),
        (Status.FAILED, False, "timeout", "SYSTEM_ERROR"),
        (Status.FAILED, False, "staging_failed", "SYSTEM_ERROR"),
        (Status.FAILED, False, "launch_failed", "SYSTEM_ERROR"),
        (Status.FAILED, False, "internal_error", "SYSTEM_ERROR"),
        (Status.FAILED, False, None, "SYSTEM_ERROR"),
    ],
)
def test_the_state_mapping_table(status, cancel, code, state):
    """The README's table, row by row: failed by the task's own commands is
    EXECUTOR_ERROR; failed by the system (a lost worker, a node, the service's limits,
    staging) is SYSTEM_ERROR."""
    from ga4gh.states import tes_state

    assert tes_state(status=status, cancel_requested=cancel, reason="", reason_code=code) == state
