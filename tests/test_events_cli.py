"""`batches events -f` and `batches watch` against a live server (gunicorn, the shipped
config) and a real worker: `events -f` follows a batch's jobs to their `batch.finished`,
and a follower killed and started again with its cursor file neither repeats nor misses
an event; `watch` follows the feed, ends on `batch.finished` at once, asks far less
than polling did, misses nothing that happens between its first reads, and polls a
server without the feed."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from client.api import Api, Settings
from client.batch_feed import BatchFeed, all_ended
from client.ids import short as short_id
from jobs.models import JobEvent
from tests.conftest import make_client
from tests.test_client import cli, cli_runner  # noqa: F401 (a fixture)
from tests.test_gunicorn import start_server  # noqa: F401 (a fixture)
from tests.worker_helpers import ROOT, script_tool, start_worker, stop_worker_process, wait_for

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


def _requests(log: Path) -> list[str]:
    """`GET /events` and the like: the server's request lines (batchsite.requests)."""
    return re.findall(r"batchsite\.requests \[\w*\] (\S+ \S+) \d+", log.read_text())


def test_watch_follows_the_feed_ends_on_batch_finished_and_asks_far_less_than_polling(start_server, alice, catalog, tmp_path):  # noqa: F811
    script_tool()
    log = tmp_path / "server.log"
    run = cli_runner(start_server(log=log, LOG_LEVEL="INFO"), make_client(alice).token)
    worker = start_worker()
    try:
        batch = json.loads(run("submit", "script", "--sweep", "script=sleep 6,sleep 8", "--json").stdout)["batch_id"]
        before = len(_requests(log))
        started = time.monotonic()
        watcher = subprocess.Popen(  # noqa: S603 (our own client)
            [sys.executable, "-m", "client", "watch", batch, "--every", "0.2"],
            cwd=ROOT,
            env=run.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: JobEvent.objects.filter(batch_id=batch, job__isnull=True).exists(), timeout=60, interval=0.02)
        announced = time.monotonic()
        out, err = watcher.communicate(timeout=30)
        ended = time.monotonic()
    finally:
        stop_worker_process(worker)
    assert watcher.returncode == 0, (out, err)
    assert out.startswith(f"batch {short_id(batch)}: succeeded 2 (watched 0:"), out
    assert "2/2  elapsed" in err, err
    made = _requests(log)[before:]
    # Polling made a status read every --every seconds; the feed: the head, the counts,
    # then a long poll per burst of changes (the jobs' starts, each end, batch.finished).
    polling = int((ended - started) / 0.2)
    print(
        f"watch: {len(made)} requests in {ended - started:.1f} s (polling at --every 0.2: {polling}); ended {ended - announced:.2f} s after batch.finished"
    )
    assert set(made) <= {"GET /events", f"GET /batches/{batch}"}, made
    assert len(made) * 4 <= polling, made
    assert ended - announced < 2.0  # the server looks every 500 ms while a long poll waits


def test_watch_misses_nothing_that_happens_between_its_first_reads(start_server, alice, catalog):  # noqa: F811
    """The feed's head is read before the counts: a batch that ends after the counts
    were read (here: all of its run, with no worker until then) is in the feed, and one
    long poll gives its `batch.finished`."""
    token = make_client(alice).token
    run = cli_runner(start_server(), token)
    batch = json.loads(run("submit", "echo", "--sweep", "message=a,b", "--json").stdout)["batch_id"]
    api = Api(Settings(url=run.env["BATCHES_URL"], token=token))
    feed = BatchFeed.at_head(api, batch, every=0.1)
    counts = api.get(f"/batches/{batch}")
    assert feed is not None and not all_ended(counts)
    worker = start_worker()
    try:
        wait_for(lambda: JobEvent.objects.filter(batch_id=batch, job__isnull=True).exists(), timeout=60)
    finally:
        stop_worker_process(worker)
    counts = feed.look(counts)
    assert feed.finished and feed.requests == 1 and counts["succeeded"] == 2 and sum(counts.values()) == 2
    # Already ended: the watch reads the head and the counts, and stops there.
    assert run("watch", batch).stdout.startswith(f"batch {short_id(batch)}: succeeded 2 (watched 0:00)")


OLD_SERVER = """
import http.server, json, sys
looks = []
class Old(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/events"):
            status, body = 404, {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Not found."}
        else:
            looks.append(self.path)
            ended = len(looks) >= 3
            status, body = 200, {"submitted": 0, "pending": 0, "runnable": 0, "starting": 0,
                                 "running": 0 if ended else 1, "succeeded": 1 if ended else 0, "failed": 0}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Old).serve_forever()
"""


def test_watch_polls_a_server_without_the_feed(tmp_path):
    """A server from before the feed (404 on /events): the counts every --every seconds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", OLD_SERVER, str(port)])  # noqa: S603 (a stand-in server of our own)
    batch = str(uuid.uuid4())
    try:
        run = cli_runner(port, "any-token")
        wait_for(lambda: run("status", batch, check=False).returncode == 0, timeout=10)  # its first look
        watched = run("watch", batch, "--every", "0.1")
    finally:
        server.terminate()
        server.wait()
    assert watched.stdout.startswith(f"batch {short_id(batch)}: succeeded 1"), watched.stdout
