"""`batches events -f` against a live server (gunicorn, the shipped config) and a real
worker: it follows a batch's jobs to their `batch.finished`, and a follower killed and
started again with its cursor file neither repeats nor misses an event."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.test_client import cli  # noqa: F401 (a fixture)
from tests.test_gunicorn import start_server  # noqa: F401 (a fixture)
from tests.worker_helpers import ROOT, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_events_follow_a_batch_to_its_end_and_resume_from_a_cursor_file(cli, tmp_path):  # noqa: F811
    cursor = tmp_path / "cursor"
    output = tmp_path / "events.jsonl"
    first = json.loads(cli("submit", "echo", "--sweep", "message=a,b,c", "--json").stdout)
    with output.open("w") as sink:
        follower = subprocess.Popen(  # noqa: S603 (our own client)
            [sys.executable, "-m", "client", "events", "-f", "--json", "--cursor-file", str(cursor)],
            cwd=ROOT,
            env=cli.env,
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: '"batch.finished"' in output.read_text(), timeout=60)
        finally:
            follower.send_signal(signal.SIGINT)
            follower.wait(10)
    seen = [json.loads(row) for row in output.read_text().splitlines()]
    mine = [e for e in seen if e["batch_id"] == first["batch_id"]]
    assert [e["type"] for e in mine if e["job_id"] is None] == ["batch.finished"]
    per_job: dict = {}
    for event in mine[:-1]:
        per_job.setdefault(event["job_id"], []).append(event["to_status"])
    assert len(per_job) == 3 and all(states[-1] == "SUCCEEDED" for states in per_job.values())
    assert int(cursor.read_text()) == seen[-1]["id"]
    # Started again from the cursor: only what came after.
    second = json.loads(cli("submit", "echo", "--arg", "message=d", "--json").stdout)
    wait_for(lambda: json.loads(cli("status", second["batch_id"], "--json").stdout)["succeeded"] == 1, timeout=60)
    time.sleep(2)  # the housekeeping's batch.finished
    again = [json.loads(row) for row in cli("events", "--json", "--cursor-file", str(cursor)).stdout.splitlines()]
    assert again and {e["batch_id"] for e in again} == {second["batch_id"]}
    assert again[0]["id"] > seen[-1]["id"]
    assert "batch.finished" in cli("events", "--type", "batch.finished").stdout
