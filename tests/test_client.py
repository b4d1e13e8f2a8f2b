"""The `batches` command-line client against a live server (gunicorn with the shipped
config) and a real worker, run as a user would run it: a process, its output read."""

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest

from accounts.shares import set_share
from tests.conftest import make_client
from tests.test_gunicorn import start_server  # noqa: F401 (a fixture)
from tests.worker_helpers import ROOT, script_tool, start_worker, stop_worker_process, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def cli(start_server, alice, catalog):  # noqa: F811
    script_tool()
    port = start_server()
    worker = start_worker()
    env = {
        "PATH": os.environ["PATH"],
        "BATCHES_URL": f"http://127.0.0.1:{port}",
        "BATCHES_TOKEN": make_client(alice).token,
        "HOME": "/nonexistent",
    }

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "client", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    run.env = env  # for a client started by hand (tests/test_events_cli.py)
    yield run
    stop_worker_process(worker)


def test_submit_a_sweep_watch_it_and_read_its_jobs_and_logs(cli, tmp_path):
    assert "echo" in cli("tools").stdout
    batch = json.loads(cli("submit", "echo", "--sweep", "message=alpha,beta,gamma", "--json").stdout)
    assert batch["n_jobs"] == 3 and batch["batch_tool"]["tool_name"] == "echo"
    watched = cli("watch", batch["batch_id"], "--every", "0.2")
    assert "succeeded 3" in watched.stdout
    jobs = json.loads(cli("jobs", batch["batch_id"], "--json").stdout)
    assert sorted(a["argument_value"] for job in jobs for a in job["job_argument_list"]) == ["alpha", "beta", "gamma"]
    assert {job["status"] for job in jobs} == {"SUCCEEDED"}
    assert "message=beta" in cli("jobs", batch["batch_id"]).stdout
    first = next(job for job in jobs if job["job_argument_list"][0]["argument_value"] == "alpha")
    assert cli("logs", batch["batch_id"], first["job_id"]).stdout == "alpha\n"
    assert "succeeded 3" in cli("status", batch["batch_id"]).stdout
    assert batch["batch_id"] in cli("ls").stdout
    # Jobs from a file, a sweep on top: 2 rows x 2 values.
    rows = tmp_path / "jobs.csv"
    rows.write_text("message\nfrom-file-1\nfrom-file-2\n")
    from_file = json.loads(cli("submit", "echo", "--from-file", str(rows), "--json").stdout)
    assert from_file["n_jobs"] == 2
    cli("rm", from_file["batch_id"])
    assert cli("status", from_file["batch_id"], check=False).returncode == 1


def test_logs_follow_a_running_job_to_its_end(cli):
    batch = json.loads(cli("submit", "script", "--arg", "script=echo one; sleep 1.5; echo two", "--json").stdout)
    job = json.loads(cli("jobs", batch["batch_id"], "--json").stdout)[0]
    wait_for(lambda: json.loads(cli("jobs", batch["batch_id"], "--json").stdout)[0]["status"] == "RUNNING", timeout=30)
    followed = cli("logs", batch["batch_id"], job["job_id"], "-f", "--every", "0.1")
    assert followed.stdout == "one\ntwo\n"
    # The job's id alone is enough, as `batches jobs` prints it.
    assert cli("logs", job["job_id"]).stdout == "one\ntwo\n"


def test_cancel_and_a_failed_watch_exit_non_zero(cli):
    batch = json.loads(cli("submit", "script", "--sweep", "script=sleep 60,sleep 61", "--json").stdout)
    wait_for(lambda: "running 2" in cli("status", batch["batch_id"]).stdout, timeout=30)
    assert "cancelled" in cli("cancel", batch["batch_id"]).stdout
    watched = cli("watch", batch["batch_id"], "--every", "0.2", check=False)
    assert watched.returncode == 1 and "failed 2" in watched.stdout
    assert {job["reason"] for job in json.loads(cli("jobs", batch["batch_id"], "--status", "failed", "--json").stdout)} == {
        "Cancelled by user"
    }


def test_errors_are_one_line_and_non_zero(cli):
    missing = cli("status", str(uuid.uuid4()), check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and missing.stderr.startswith("batches: 404")
    unknown = cli("submit", "no-such-tool", "--arg", "x=1", check=False)
    assert unknown.returncode == 1 and "no tool 'no-such-tool' (yours: " in unknown.stderr
    bad = cli("submit", "echo", "--arg", "colour=red", check=False)
    assert bad.returncode == 1 and "jobs[0].args" in bad.stderr and "Traceback" not in bad.stderr


def test_what_a_new_user_tripped_on(cli, tmp_path, monkeypatch):
    """Found by trying the client as a new user: values from --arg, --sweep and CSV went
    as strings (`fail --sweep code=0,3`: 'must be an integer, not a string'); an empty
    file became one job; a non-UTF-8 file, a non-ASCII token and a server that answers
    HTML were tracebacks; a CSV saved with a BOM named an invisible key; a row longer
    than its header, and a key swept twice, went silently wrong; `submit --help` wanted
    a token; a 404 said 'Not found: Not found.'."""
    swept = json.loads(cli("submit", "fail", "--sweep", "code=0,3", "--json").stdout)
    assert swept["n_jobs"] == 2
    watched = cli("watch", swept["batch_id"], "--every", "0.2", check=False)
    assert watched.returncode == 1 and "succeeded 1" in watched.stdout and "failed 1" in watched.stdout
    assert json.loads(cli("submit", "sleep", "--arg", "seconds=0.1", "--json").stdout)["n_jobs"] == 1
    typed = tmp_path / "typed.csv"
    typed.write_bytes("\ufeffcode\n0\n".encode())  # as a spreadsheet saves it
    assert json.loads(cli("submit", "fail", "--from-file", str(typed), "--json").stdout)["n_jobs"] == 1
    not_a_number = cli("submit", "fail", "--arg", "code=three", check=False)
    assert not_a_number.returncode == 2 and "code" in not_a_number.stderr and "integer" in not_a_number.stderr

    def refused(*args: str, code: int, words: str) -> None:
        done = cli(*args, check=False)
        assert done.returncode == code and words in done.stderr, (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr

    empty = tmp_path / "empty.csv"
    empty.write_text("message\n")
    refused("submit", "echo", "--from-file", str(empty), "--arg", "message=x", code=2, words="no jobs in")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe m\n")
    refused("submit", "echo", "--from-file", str(binary), code=2, words="UTF-8")
    long_row = tmp_path / "long.csv"
    long_row.write_text("message\nhello,extra\n")
    refused("submit", "echo", "--from-file", str(long_row), code=2, words="line 2")
    refused("submit", "echo", "--sweep", "message=a,b", "--sweep", "message=c,d", code=2, words="message")
    missing = str(uuid.uuid4())
    refused("status", missing, code=1, words=missing)

    monkeypatch.setenv("BATCHES_TOKEN", "t\u00f6k\u00e9n")
    done = subprocess.run(
        [sys.executable, "-m", "client", "ls"], cwd=ROOT, env={**os.environ, "HOME": "/nonexistent"}, capture_output=True, text=True
    )
    assert done.returncode == 1 and "token" in done.stderr and "Traceback" not in done.stderr, done.stderr
    bare = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "client", "submit", "--help"], cwd=ROOT, env=bare, capture_output=True, text=True)
    assert done.returncode == 0 and "--sweep" in done.stdout, done.stderr
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / "index.html").write_text("<html>not the service</html>")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=10)
        done = subprocess.run(
            [sys.executable, "-m", "client", "--url", f"http://127.0.0.1:{port}", "--token", "x", "ls"],
            cwd=ROOT,
            env=bare,
            capture_output=True,
            text=True,
        )
    finally:
        web.terminate()
        web.wait()
    assert done.returncode == 1 and "JSON" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_ids_values_and_files_a_second_round_tripped_on(cli, tmp_path):
    """`rm ""` (an unset shell variable) sent DELETE /batches/ and deleted every batch;
    `status ../tools` fetched another route and crashed; nan, inf and 1e999 were
    tracebacks inside httpx; a CSV row shorter than its header sent nulls, a header
    naming a column twice kept the last one."""
    kept = json.loads(cli("submit", "echo", "--arg", "message=keep", "--json").stdout)["batch_id"]
    for bad in ("", ".", "../tools", "?x=1", "#x", kept + "#frag"):
        for command in (["rm", bad], ["status", bad], ["logs", bad]):
            done = cli(*command, check=False)
            assert done.returncode == 2 and "Traceback" not in done.stderr, (command, done.stderr)
    assert kept in cli("ls").stdout, "nothing was deleted"
    for value in ("nan", "inf", "-inf", "1e999", "1_000", " 5"):
        done = cli("submit", "sleep", "--arg", f"seconds={value}", check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "seconds" in done.stderr, (value, done.stderr)
    jsonl = tmp_path / "nan.jsonl"
    jsonl.write_text('{"seconds": NaN}\n')
    done = cli("submit", "sleep", "--from-file", str(jsonl), check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    short = tmp_path / "short.csv"
    short.write_text("message,other\nhello\n")
    done = cli("submit", "echo", "--from-file", str(short), check=False)
    assert done.returncode == 2 and "line 2" in done.stderr, done.stderr
    twice = tmp_path / "twice.csv"
    twice.write_text("message,message\na,b\n")
    done = cli("submit", "echo", "--from-file", str(twice), check=False)
    assert done.returncode == 2 and "message" in done.stderr, done.stderr


def test_shares_and_why_say_who_runs_next(cli, alice, root, bob):
    """`why` prints a job's status, reason and place in line (JOB alone or BATCH JOB);
    `shares` the caller's standing, an operator's every user's; tables and reasons are
    whole lines when stdout is a pipe (rich folded them at 80 columns)."""
    set_share(user=bob, weight=3, group="genomics", group_weight=2)
    script = str(script_tool().pk)
    body = {"tool_id": script, "hardware": {"cpu": 1, "memory": 256}, "jobs": [{"args": {"script": "sleep 20"}}] * 3, "max_running": 1}
    response = make_client(alice).post("/batches", body, format="json")
    assert response.status_code == 201, response.content
    batch = response.json()["batch_id"]

    def listed() -> list[dict]:
        return json.loads(cli("jobs", batch, "--json").stdout)

    wait_for(lambda: [job["status"] for job in listed()].count("RUNNING") == 1, timeout=30)
    jobs = listed()
    running = next(job for job in jobs if job["status"] == "RUNNING")
    waiting = [job for job in jobs if job["status"] != "RUNNING"]
    assert len(waiting) == 2

    said = cli("why", running["job_id"]).stdout.splitlines()
    assert said[0] == f"job       {running['job_id']}" and said[1] == "status    RUNNING"
    assert said[3] == "position  not in line: it has started", said
    detail = json.loads(cli("why", batch, waiting[0]["job_id"], "--json").stdout)
    assert detail["status"] == "RUNNABLE" and detail["queue_position"] in (1, 2), detail
    assert detail["reason"].startswith("Its batch runs at most 1 job(s) at once (1 running)"), detail
    said = cli("why", batch, waiting[0]["job_id"]).stdout.splitlines()
    assert said[1] == "status    RUNNABLE" and said[2].startswith("reason    Its batch runs at most 1 job(s) at once"), said
    assert said[3].startswith("position  ") and "in line" not in said[3], said
    assert cli("why", "../shares", check=False).returncode == 2
    missing = cli("why", str(uuid.uuid4()), check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("batches: 404"), missing.stderr
    # Whole rows in a pipe: the job list's reasons are not folded.
    rows = cli("jobs", batch).stdout.splitlines()
    whole = [row for row in rows if row.startswith(waiting[0]["job_id"])]
    assert len(rows) == 4 and len(whole) == 1 and len(whole[0]) > 80 and whole[0].endswith(detail["reason"].split(";")[0]), rows

    mine = json.loads(cli("shares", "--json").stdout)
    assert [(s["username"], s["weight"], s["running_jobs"], s["waiting_jobs"]) for s in mine] == [("alice", 1, 1, 2)]
    assert mine[0]["current_share"] == 1.0 and mine[0]["fair_share"] == 1.0
    table = cli("shares").stdout.splitlines()
    assert table[0].split() == [
        *("user", "group", "weight", "usage", "(cpu-s,", "half-life", "1", "h)"),
        *("fair", "share", "current", "share", "running", "cpus", "waiting"),
    ], table
    assert table[1].split() == ["alice", "-", "1", table[1].split()[3], "100.0%", "100.0%", "1", "1", "2"], table
    operator = ["--token", make_client(root).token]
    everyone = {s["username"]: s for s in json.loads(cli(*operator, "shares", "--json").stdout)}
    assert {"alice", "bob"} <= set(everyone)
    assert (everyone["bob"]["weight"], everyone["bob"]["group"], everyone["bob"]["group_weight"]) == (3, "genomics", 2)
    rows = {row.split()[0]: row for row in cli(*operator, "shares").stdout.splitlines()[1:]}
    assert rows["bob"].split()[:5] == ["bob", "genomics", "(weight", "2)", "3"], rows
    cli("cancel", batch)
