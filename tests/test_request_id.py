"""Every answer carries a request id, and every log line written while serving it does
too; LOG_FORMAT=json writes one JSON object per line."""

import json
import logging
import subprocess
import sys
import uuid

from batchsite.requests_log import RequestIdFilter, current_request_id
from tests.worker_helpers import ROOT


def test_the_request_id_is_returned_and_logged(alice_client, caplog):
    with caplog.at_level(logging.INFO, logger="batchsite.requests"):
        response = alice_client.get("/tools", HTTP_X_REQUEST_ID="client-chosen.id:42")
    assert response["X-Request-ID"] == "client-chosen.id:42"
    [record] = [r for r in caplog.records if r.name == "batchsite.requests"]
    assert (record.request_id, record.status, record.method, record.path) == ("client-chosen.id:42", 200, "GET", "/tools")
    assert record.user_id is not None and record.duration_ms >= 0


def test_a_missing_or_unsafe_request_id_is_replaced(anon_client):
    made = anon_client.get("/healthz")["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0
    for unsafe in ("a" * 129, "new\nline", "<script>", "spa ce"):
        answer = anon_client.get("/healthz", HTTP_X_REQUEST_ID=unsafe)["X-Request-ID"]
        assert answer != unsafe and len(answer) == 32
    # Problems (401, 404) carry it too.
    assert len(anon_client.get("/batches")["X-Request-ID"]) == 32
    assert len(anon_client.get("/no-such-route")["X-Request-ID"]) == 32


def test_log_format_json_writes_one_object_per_line_with_the_request_id(tmp_path):
    """In a process of its own, with the deployment's settings and LOG_FORMAT=json."""
    code = (
        "import django, logging; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/healthz', HTTP_X_REQUEST_ID='abc-123');"
        "logging.getLogger('batches').warning('outside any request')"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "batchsite.settings",
        "SECRET_KEY": "tests-only",
        "BATCHES_DATA_DIR": str(tmp_path),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "ALLOWED_HOSTS": "testserver",
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)  # noqa: S603
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    request = next(line for line in lines if line["logger"] == "batchsite.requests")
    assert request["request_id"] == "abc-123" and request["status"] == 200 and request["path"] == "/healthz"
    assert {"time", "level", "message"} <= set(request)
    outside = next(line for line in lines if line["message"] == "outside any request")
    assert outside["request_id"] == "" and outside["level"] == "WARNING"


def test_djangos_own_lines_about_a_request_carry_its_id(alice_client):
    """Django writes its 'Not Found: ...' warning after the middleware has answered: it
    had an empty id, in text and JSON logs alike."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.emit = lambda record: seen.append(record.request_id)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        alice_client.get(f"/batches/{uuid.uuid4()}", HTTP_X_REQUEST_ID="four-oh-four")
    finally:
        logger.removeHandler(handler)
    assert seen == ["four-oh-four"]
    assert current_request_id() == "", "and no id is left behind once the answer is done"


def test_log_requests_changes_logs_writes_and_errors_only(alice_client, caplog, settings):
    """make run's console (LOG_REQUESTS=changes): a `--watch` polling for 15 minutes
    wrote about 10,500 lines that buried the worker's messages."""
    settings.LOG_REQUESTS = "changes"
    with caplog.at_level(logging.INFO, logger="batchsite.requests"):
        assert alice_client.get("/tools").status_code == 200
        assert alice_client.get("/batches/nope").status_code == 404
        assert alice_client.delete("/batches/nope").status_code == 404
        assert alice_client.post("/batches", {}, format="json").status_code == 400
    logged = [(r.method, r.status) for r in caplog.records if r.name == "batchsite.requests"]
    assert logged == [("GET", 404), ("DELETE", 404), ("POST", 400)]


def test_gunicorn_writes_no_access_line_of_its_own():
    """Each request was logged twice on make run's console: gunicorn's access line and
    the service's own (which has the request id and the user)."""
    config: dict = {}
    exec((ROOT / "batchsite" / "gunicorn.conf.py").read_text(), config)  # noqa: S102 (our own config file)
    assert config["accesslog"] is None
