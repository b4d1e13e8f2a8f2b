"""The shipped gunicorn set-up, as a real server on loopback: chunked bodies are read,
and the errors gunicorn answers itself are problem documents, not HTML pages."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from batches.models import Batch
from jobs.models import Job
from tests.conftest import make_client, submission
from tests.load import run_load
from tests.worker_helpers import ROOT, wait_for, worker_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_server():
    """Starts gunicorn with the shipped config (and `env` overrides); returns its port."""
    # The server runs the real settings: their shared cache lives in the database.
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "batches_cache"}}):
        call_command("createcachetable")
    processes: list[subprocess.Popen] = []
    logs: list = []

    def start(log: Path | None = None, **env: str) -> int:
        """`log`: a file for the server's stderr (its request lines with LOG_LEVEL=INFO)."""
        port = free_port()
        if log is not None:
            logs.append(log.open("w"))
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "batchsite/gunicorn.conf.py", "batchsite.wsgi"],
            cwd=ROOT,
            env=worker_env(HOST="127.0.0.1", PORT=str(port), **{"WEB_WORKERS": "1", **env}),
            stdout=subprocess.DEVNULL,
            stderr=logs[-1] if log is not None else subprocess.DEVNULL,
        )
        processes.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return port
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "gunicorn did not start"
            time.sleep(0.2)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)
    for file in logs:
        file.close()


@pytest.fixture
def server(start_server):
    return start_server()


def raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def test_a_chunked_submission_is_read(server, alice, catalog):
    token = make_client(alice).token
    body = json.dumps(submission(catalog)).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    connection.request(
        "POST",
        "/batches",
        body=iter([body[:40], body[40:]]),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 201, response.read()
    assert json.loads(response.read())["n_jobs"] == 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"NOT A REQUEST LINE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
    ],
    ids=["long-request-line", "malformed", "too-many-headers"],
)
def test_errors_before_django_are_problems(server, request_bytes, status):
    code, headers, body = raw(server, request_bytes)
    assert code in (status, 400)
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == code and problem["title"] and problem["detail"]
    assert len(headers["X-Request-ID"]) == 32, "every answer carries a request id, these too"
    assert problem["type"].startswith("urn:batches:problem:")


def test_the_throttle_is_shared_by_every_web_process(start_server, alice):
    """With a per-process cache, 4 processes let 40 of 60 requests through at 10/min."""
    port = start_server(WEB_WORKERS="4", BATCHES_THROTTLE_RATE="10/min")
    token = make_client(alice).token
    codes = []
    for _ in range(30):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # new connections: any process
        connection.request("GET", "/batches", headers={"Authorization": f"Bearer {token}"})
        codes.append(connection.getresponse().status)
    assert codes.count(200) == 10, codes
    assert set(codes) == {200, 429}


def test_metrics_count_the_submissions_of_every_web_process(start_server, alice, catalog):
    """Four gunicorn processes each take some of 12 submissions (new connections); one
    scrape, answered by any of them, counts all 12 (prometheus_client's multiprocess
    mode, set up by the shipped config). Loopback is allowed by setting: it needs the
    token otherwise."""
    port = start_server(WEB_WORKERS="4", BATCHES_METRICS_ALLOW="127.0.0.1/32,::1/128")
    token = make_client(alice).token
    body = json.dumps(submission(catalog)).encode()
    for _ in range(12):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/batches", body=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert connection.getresponse().status == 201
    for _ in range(4):  # whichever process answers
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("X-Request-ID")
        text = response.read().decode()
        assert "batches_submissions_total 12.0" in text and "batches_submitted_jobs_total 24.0" in text, text[-800:]


def test_a_mixed_load_gets_no_server_error_and_loses_nothing(start_server, catalog):
    """Eight clients for 15 s through the shipped gunicorn set-up: submissions (some of
    20,000 jobs), reads, cancels and deletes. No 5xx, and every batch answered 201 is in
    the database with all its jobs (bench/mixed_load.py runs it longer and wider)."""
    from django.contrib.auth.models import User

    port = start_server(WEB_WORKERS="4")
    tokens = [make_client(User.objects.create_user(f"load{i}")).token for i in range(8)]
    result = run_load(port=port, tokens=tokens, body=submission(catalog), seconds=15)
    assert result.server_errors() == {}, result.server_errors()
    assert result.errors == []
    assert sum(len(codes) for codes in result.codes.values()) > 50
    kept = {batch_id: n for batch_id, n in result.created.items() if batch_id not in result.deleted}
    assert kept and dict(Batch.objects.filter(pk__in=kept, deleted_at__isnull=True).values_list("pk", "n_jobs")) == {
        uuid.UUID(batch_id): n for batch_id, n in kept.items()
    }
    for batch_id, n in kept.items():
        assert Job.objects.filter(batch_id=batch_id).count() == n


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def test_the_metrics_folder_it_made_goes_when_it_stops(tmp_path):
    """Each start left a /tmp/batches-metrics-* folder behind (34 on one machine).
    Stopped once it serves: a signal during start-up kills it before its hooks exist."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "batchsite/gunicorn.conf.py", "batchsite.wsgi"],
        cwd=ROOT,
        env=worker_env(HOST="127.0.0.1", PORT=str(port), WEB_WORKERS="1", TMPDIR=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: list(tmp_path.glob("batches-metrics-*")) and _answers(port), timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not list(tmp_path.glob("batches-metrics-*"))


def test_log_format_json_is_json_on_every_line_gunicorn_writes_too(tmp_path):
    """With LOG_FORMAT=json, gunicorn's own lines (start, access, stop) were plain text
    among the service's JSON ones."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "batchsite/gunicorn.conf.py", "batchsite.wsgi"],
        cwd=ROOT,
        env=worker_env(HOST="127.0.0.1", PORT=str(port), WEB_WORKERS="1", LOG_FORMAT="json", LOG_LEVEL="INFO"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: _answers(port), timeout=30)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    lines = [line for line in output.splitlines() if line.strip()]
    assert any("Booting worker" in line for line in lines), output
    for line in lines:
        json.loads(line)  # raises on a line that is not JSON


def _start_logged(port: int, log_path, **env: str) -> subprocess.Popen:
    """The shipped config with `env`, its output (gunicorn's own log lines) in log_path."""
    environment = worker_env(HOST="127.0.0.1", PORT=str(port), WEB_WORKERS="1", **env)
    environment.pop("XDG_RUNTIME_DIR", None)  # gunicorn's other default home for its socket
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "batchsite/gunicorn.conf.py", "batchsite.wsgi"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_two_servers_leave_no_control_socket_in_the_home(tmp_path):
    """gunicorn 25+ opened a control socket at one fixed path per home
    (~/.gunicorn/gunicorn.ctl): a second server took it over, and removed it when it
    stopped, from under the first. The shipped config opens none."""
    home = tmp_path / "home"
    home.mkdir()
    first_port, second_port = free_port(), free_port()
    first = _start_logged(first_port, tmp_path / "first.log", HOME=str(home))
    try:
        second = _start_logged(second_port, tmp_path / "second.log", HOME=str(home))
        try:
            wait_for(lambda: _answers(first_port) and _answers(second_port), timeout=30)
            assert list(home.rglob("*")) == []
        finally:
            _stop(second)
        assert _answers(first_port)
    finally:
        _stop(first)
    assert list(home.rglob("*")) == []
    for log in ("first.log", "second.log"):
        assert "control socket" not in (tmp_path / log).read_text().lower()


def test_a_home_it_cannot_write_gets_no_warning_at_start(tmp_path):
    """Under a user without a writable home, every start logged a permission error
    (the control socket's folder could not be made). A read-only folder is no obstacle
    to root, so as root the home is a regular file: no user can create anything below it."""
    if os.geteuid() == 0:
        home = tmp_path / "home-is-a-file"
        home.write_text("")
    else:
        home = tmp_path / "home"
        home.mkdir(mode=0o500)
    port = free_port()
    process = _start_logged(port, tmp_path / "server.log", HOME=str(home), LOG_LEVEL="INFO")
    try:
        wait_for(lambda: _answers(port), timeout=30)
    finally:
        _stop(process)
    output = (tmp_path / "server.log").read_text()
    assert "Booting worker" in output, output
    for word in ("control s", "permission denied", "errno"):
        assert word not in output.lower(), output
    if home.is_dir():
        assert list(home.rglob("*")) == []
