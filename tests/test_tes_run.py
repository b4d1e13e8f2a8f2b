"""GA4GH TES tasks run for real (issue 23): created through /ga4gh/tes/v1 by a user
allowed to run commands, run by a local worker with every step sealed in a sandbox of
its own, read back in TES's shapes. Without root and bubblewrap these skip with the
reason (BATCHES_REQUIRE_ISOLATION=1, as in CI, makes them fail instead)."""

import os
import tempfile
from pathlib import Path

import pytest

from accounts.capabilities import allow_commands
from batches.models import Filesystem, Image
from jobs.models import Job
from tests.conftest import make_client
from tests.test_isolation import sealed_isolation
from tests.worker_helpers import drive, in_process_loop

pytestmark = pytest.mark.django_db

TES = "/ga4gh/tes/v1"


@pytest.fixture
def loop():
    loop = in_process_loop(isolation=sealed_isolation(), grace=0.5)
    yield loop
    loop.stop()


@pytest.fixture
def tes(alice):
    allow_commands(user=alice)
    Image.objects.create(pattern="alpine*", root="", position=0)
    return make_client(alice)


@pytest.fixture
def store(alice):
    """A filesystem of alice's, in a folder every job account may traverse."""
    base = Path(tempfile.mkdtemp(prefix="batches-tes-"))
    base.chmod(0o755)
    (base / "data").mkdir()
    (base / "data").chmod(0o777)
    fs = Filesystem.objects.create(name="tes-store", path=str(base / "data"))
    fs.users.add(alice)
    return base / "data"


def run(tes, loop, document: dict) -> dict:
    response = tes.post(f"{TES}/tasks", document, format="json")
    assert response.status_code == 200, response.content
    task_id = response.json()["id"]
    drive(loop, lambda: Job.objects.get(batch_id=task_id).status in ("SUCCEEDED", "FAILED"), timeout=60)
    return tes.get(f"{TES}/tasks/{task_id}?view=FULL").json()


def test_executors_run_in_order_sharing_volumes_with_stdin_stdout_and_env(tes, loop):
    task = run(
        tes,
        loop,
        {
            "name": "two steps",
            "inputs": [{"path": "/data/in.txt", "content": "hello from content\n"}],
            "volumes": ["/vol"],
            "executors": [
                {
                    "image": "alpine",
                    "command": ["/bin/sh", "-c", 'cat > /vol/copy; echo "$GREETING" >> /vol/copy'],
                    "stdin": "/data/in.txt",
                    "env": {"GREETING": "hi there"},
                },
                {"image": "alpine", "command": ["cat", "/vol/copy"], "stdout": "/data/out.txt", "workdir": "/vol"},
                {"image": "alpine", "command": ["cat", "/data/out.txt"]},
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    (log,) = task["logs"]
    assert [step["exit_code"] for step in log["logs"]] == [0, 0, 0]
    assert log["logs"][2]["stdout"] == "hello from content\nhi there\n"
    assert all(step["start_time"] <= step["end_time"] for step in log["logs"])
    assert log["start_time"] <= log["logs"][0]["start_time"]


def test_a_failing_executor_is_an_executor_error_and_stops_the_rest_unless_ignored(tes, loop):
    task = run(
        tes,
        loop,
        {"executors": [{"image": "alpine", "command": ["sh", "-c", "exit 3"]}, {"image": "alpine", "command": ["echo", "never"]}]},
    )
    assert task["state"] == "EXECUTOR_ERROR"
    assert [step["exit_code"] for step in task["logs"][0]["logs"]] == [3]
    assert any("step 1 of 2 (sh) ended with exit code 3" in line for line in task["logs"][0]["system_logs"])
    task = run(
        tes,
        loop,
        {"executors": [{"image": "alpine", "command": ["ERROR"], "ignore_error": True}, {"image": "alpine", "command": ["echo", "after"]}]},
    )
    assert [step["exit_code"] for step in task["logs"][0]["logs"]] == [1, 0]
    assert task["logs"][0]["logs"][1]["stdout"] == "after\n"
    assert task["state"] == "COMPLETE"


def test_inputs_by_file_url_and_outputs_to_the_callers_filesystem(tes, loop, store):
    (store / "reads.txt").write_text("ACGT\n")
    (store / "reads.txt").chmod(0o644)
    task = run(
        tes,
        loop,
        {
            "inputs": [{"url": f"file://{store}/reads.txt", "path": "/in/reads.txt"}],
            "outputs": [
                {"url": f"file://{store}/result.txt", "path": "/out/result.txt"},
                {"url": f"file://{store}/many", "path": "/out/part-*", "path_prefix": "/out", "type": "DIRECTORY"},
            ],
            "executors": [
                {
                    "image": "alpine",
                    "command": ["sh", "-c", "tr ACGT TGCA < /in/reads.txt > /out/result.txt; echo 1 > /out/part-1; echo 2 > /out/part-2"],
                }
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert (store / "result.txt").read_text() == "TGCA\n"
    assert sorted(os.listdir(store / "many")) == ["part-1", "part-2"]
    logged = {o["path"]: o for o in task["logs"][0]["outputs"]}
    assert logged["/out/result.txt"] == {"url": f"file://{store}/result.txt", "path": "/out/result.txt", "size_bytes": "5"}
    assert logged["/out/part-2"]["url"] == f"file://{store}/many/part-2"


def test_an_input_that_cannot_be_fetched_is_a_system_error_with_the_reason(tes, loop):
    task = run(
        tes, loop, {"inputs": [{"url": "s3://bucket/file", "path": "/data/file"}], "executors": [{"image": "alpine", "command": ["true"]}]}
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert task["logs"][0]["logs"] == []
    assert any("s3://bucket/file cannot be fetched" in line for line in task["logs"][0]["system_logs"]), task["logs"][0]["system_logs"]


def test_a_step_sees_nothing_of_the_host_but_the_system(tes, loop, store):
    secret = store / "secret.txt"
    secret.write_text("not for steps")
    task = run(tes, loop, {"executors": [{"image": "alpine", "command": ["sh", "-c", f"cat {secret}; ls /work /root 2>&1; id -u"]}]})
    out = task["logs"][0]["logs"][0]["stdout"]
    assert "not for steps" not in out and "No such file" in out
    assert out.strip().splitlines()[-1] != "0"  # never root


def test_a_cluster_worker_refuses_a_task_with_a_reason(settings, tmp_path):
    """A task's runner runs on local workers and on Slurm (whose adapter says it runs
    tasks): a cluster executor whose scheduler does not (here the test's fake one)
    fails it at once with a reason, never runs its empty argv."""
    from jobs.executors.base import AttemptSpec
    from tests.fake_cluster import FakeClusterExecutor

    settings.BATCHES_SLURM_SHARED_DIR = tmp_path
    executor = FakeClusterExecutor.from_settings(cpus=1, memory_mib=256)
    spec = AttemptSpec(
        job_id="j", batch_id="b", attempt=1, log_id="l", argv=[], cpu=1, memory_mib=64, timeout_seconds=5, task={"steps": []}
    )
    (report,) = executor.submit([spec])
    assert (report.succeeded, report.reason_code) == (False, "launch_failed")
    assert "local workers and Slurm" in report.reason


def test_http_inputs_only_from_allowed_hosts_and_never_redirected(tes, loop, settings):
    """An http(s) input is fetched (by the runner, before the first step) only from a
    host in BATCHES_TES_INPUT_HOSTS, and a redirect is not followed: the operator
    allowed that host, not wherever it points."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "http://example.org/elsewhere")
                self.end_headers()
                return
            body = b"served over http\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        refused = run(
            tes,
            loop,
            {"inputs": [{"url": f"{base}/file", "path": "/data/in"}], "executors": [{"image": "alpine", "command": ["cat", "/data/in"]}]},
        )
        assert refused["state"] == "SYSTEM_ERROR"
        assert any("http(s) from none allowed by the operator" in line for line in refused["logs"][0]["system_logs"])
        settings.BATCHES_TES_INPUT_HOSTS = ["127.0.0.1"]
        fetched = run(
            tes,
            loop,
            {"inputs": [{"url": f"{base}/file", "path": "/data/in"}], "executors": [{"image": "alpine", "command": ["cat", "/data/in"]}]},
        )
        assert fetched["state"] == "COMPLETE", fetched
        assert fetched["logs"][0]["logs"][0]["stdout"] == "served over http\n"
        moved = run(
            tes, loop, {"inputs": [{"url": f"{base}/moved", "path": "/data/in"}], "executors": [{"image": "alpine", "command": ["true"]}]}
        )
        assert moved["state"] == "SYSTEM_ERROR"
        assert any("could not be fetched" in line for line in moved["logs"][0]["system_logs"]), moved["logs"][0]["system_logs"]
    finally:
        server.shutdown()


def test_links_a_step_makes_never_lead_the_runner_to_the_hosts_files(tes, loop, store):
    """The runner works outside the sandbox: a link a step made in a task directory
    (its container path is all it meant) must not take the runner's writes, reads or
    copies to the host's files."""
    victim = store / "victim.txt"
    victim.write_text("untouched\n")
    victim.chmod(0o666)
    task = run(
        tes,
        loop,
        {
            "volumes": ["/vol"],
            "executors": [
                {"image": "alpine", "command": ["ln", "-s", str(victim), "/vol/out.txt"]},
                {"image": "alpine", "command": ["echo", "overwritten"], "stdout": "/vol/out.txt"},
            ],
        },
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert victim.read_text() == "untouched\n"
    assert any("leads out of the task's directories" in line for line in task["logs"][0]["system_logs"]), task["logs"][0]["system_logs"]
    task = run(
        tes,
        loop,
        {
            "outputs": [{"path": "/vol/passwd", "url": f"file://{store}/copied"}],
            "volumes": ["/vol"],
            "executors": [{"image": "alpine", "command": ["ln", "-s", "/etc/passwd", "/vol/passwd"]}],
        },
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert not (store / "copied").exists()
