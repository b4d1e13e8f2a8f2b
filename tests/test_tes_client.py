"""py-tes, the GA4GH TES Python client, against a live server (gunicorn, the shipped
config) and a sealed worker (issue 23): what a workflow engine does through it. Skips
without root and bubblewrap unless BATCHES_REQUIRE_ISOLATION=1 (CI), where it fails."""

import tempfile
import time
from pathlib import Path

import pytest
import requests
import tes
from django.conf import settings

from accounts.capabilities import allow_commands
from accounts.services import issue_token
from batches.models import Filesystem, Image
from tests.test_gunicorn import start_server  # noqa: F401 (a fixture)
from tests.test_isolation import sealed_isolation
from tests.worker_helpers import start_worker, stop_worker_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@pytest.fixture
def client(start_server, alice, tmp_path):  # noqa: F811
    sealed_isolation()
    allow_commands(user=alice)
    Image.objects.create(pattern="alpine*", root="", position=0)
    port = start_server()
    worker = start_worker(BATCHES_ISOLATION="auto", BATCHES_JOB_USER=settings.BATCHES_JOB_USER, BATCHES_REQUIRE_ISOLATION="1")
    token = issue_token(user=alice, name="py-tes")[1]
    yield tes.HTTPClient(f"http://127.0.0.1:{port}", user="alice", password=token, timeout=30)
    stop_worker_process(worker)


def wait(client: tes.HTTPClient, task_id: str, states: set[str] = FINAL, timeout: float = 60) -> tes.Task:
    deadline = time.monotonic() + timeout
    while (task := client.get_task(task_id, view="MINIMAL")).state not in states:
        assert time.monotonic() < deadline, f"task {task_id} still {task.state}"
        time.sleep(0.2)
    return client.get_task(task_id, view="FULL")


def test_py_tes_creates_waits_reads_lists_and_cancels(client, alice):
    # Not under pytest's tmp_path: its folders are private to root, and the job's
    # account reads and writes the filesystem.
    base = Path(tempfile.mkdtemp(prefix="batches-tes-client-"))
    base.chmod(0o755)
    store = base / "store"
    store.mkdir()
    store.chmod(0o777)
    (store / "in.txt").write_text("from a file\n")
    (store / "in.txt").chmod(0o644)
    fs = Filesystem.objects.create(name="tes-client-store", path=str(store))
    fs.users.add(alice)

    task_id = client.create_task(
        tes.Task(
            name="hello",
            tags={"run": "1"},
            inputs=[
                tes.Input(path="/data/a.txt", content="from content\n"),
                tes.Input(path="/data/b.txt", url=f"file://{store}/in.txt"),
            ],
            outputs=[tes.Output(path="/data/out.txt", url=f"file://{store}/out.txt")],
            executors=[
                tes.Executor(image="alpine", command=["sh", "-c", "cat /data/a.txt /data/b.txt > /data/out.txt; cat /data/out.txt"])
            ],
        )
    )
    done = wait(client, task_id)
    assert done.state == "COMPLETE", done
    assert done.logs[0].logs[0].exit_code == 0
    assert done.logs[0].logs[0].stdout == "from content\nfrom a file\n"
    assert (store / "out.txt").read_text() == "from content\nfrom a file\n"
    assert int(done.logs[0].outputs[0].size_bytes) == 25  # a string in TES (int64 in JSON); py-tes reads it as a number
    basic = client.get_task(task_id, view="BASIC")
    assert basic.name == "hello" and basic.tags == {"run": "1"} and basic.logs[0].logs[0].stdout is None
    assert basic.inputs[0].content is None and basic.inputs[1].url == f"file://{store}/in.txt"

    failing = client.create_task(tes.Task(executors=[tes.Executor(image="alpine", command=["sh", "-c", "exit 7"])]))
    failed = wait(client, failing)
    assert failed.state == "EXECUTOR_ERROR" and failed.logs[0].logs[0].exit_code == 7

    sleeping = client.create_task(tes.Task(name="long", executors=[tes.Executor(image="alpine", command=["sleep", "60"])]))
    wait(client, sleeping, states={"RUNNING"})
    client.cancel_task(sleeping)
    assert wait(client, sleeping).state == "CANCELED"

    for n in range(2):
        client.create_task(tes.Task(name=f"more-{n}", executors=[tes.Executor(image="alpine", command=["true"])]))
    pages, seen, token = 0, [], None
    while True:
        page = client.list_tasks(view="MINIMAL", page_size=2, page_token=token)
        seen += [t.id for t in page.tasks]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5

    # py-tes 1.1.4's list_tasks sends no filters: the same request with them, as
    # py-tes authenticates (HTTP Basic, the token as the password).
    def listed(**params: object) -> list[str]:
        answer = requests.get(f"{client.url}/ga4gh/tes/v1/tasks", params=params, auth=(client.user, client.password), timeout=30)
        assert answer.status_code == 200, answer.text
        return [t["id"] for t in answer.json()["tasks"]]

    assert listed(state="EXECUTOR_ERROR") == [failing]
    assert listed(state="CANCELED") == [sleeping]
    assert listed(name_prefix="hel", view="BASIC") == [task_id]
    assert listed(tag_key="run", tag_value="1") == [task_id]
    assert client.get_service_info().type["artifact"] == "tes"
