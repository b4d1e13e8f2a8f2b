"""The `batches` command-line client against a live server (gunicorn with the shipped
config) and a real worker, run as a user would run it: a process, its output read."""

import json
import os
import pty
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from accounts.shares import set_share
from client.ids import short as short_id
from tests.conftest import make_client
from tests.test_gunicorn import start_server  # noqa: F401 (a fixture)
from tests.worker_helpers import ROOT, script_tool, start_worker, stop_worker_process, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def cli_runner(port: int, token: str) -> Callable[..., subprocess.CompletedProcess]:
    """`run(*args)`: the client run as a process against the server on `port` with
    `token`, its output captured (checked to exit 0 unless `check=False`); `run.env` is
    its environment, for a client started by other means."""
    env = {
        "PATH": os.environ["PATH"],
        "BATCHES_URL": f"http://127.0.0.1:{port}",
        "BATCHES_TOKEN": token,
        "HOME": "/nonexistent",
    }

    def run(*args: str, check: bool = True, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "client", *args],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,  # no terminal to ask on, whatever runs the tests
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    run.env = env
    return run


@pytest.fixture
def cli(start_server, alice, catalog):  # noqa: F811
    script_tool()
    port = start_server()
    worker = start_worker()
    yield cli_runner(port, make_client(alice).token)
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
    report = cli("usage", batch["batch_id"]).stdout
    print(report)
    assert "Jobs ended: 3 (3 attempt(s) ended)" in report and "Ended as: succeeded 3" in report, report
    usage = json.loads(cli("usage", batch["batch_id"], "--json").stdout)
    assert usage["attempts"] == 3 and usage["reason_codes"] == {"succeeded": 3} and usage["cpu_seconds"] > 0
    assert short_id(batch["batch_id"]) in cli("ls").stdout
    # Jobs from a file, a sweep on top: 2 rows x 2 values.
    rows = tmp_path / "jobs.csv"
    rows.write_text("message\nfrom-file-1\nfrom-file-2\n")
    from_file = json.loads(cli("submit", "echo", "--from-file", str(rows), "--json").stdout)
    assert from_file["n_jobs"] == 2
    cli("rm", from_file["batch_id"], "--yes")
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
    assert short_id(kept) in cli("ls").stdout, "nothing was deleted"
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
    whole = [row for row in rows if row.startswith(short_id(waiting[0]["job_id"]))]
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


def _api_batch(user, jobs: list[str], **options) -> str:
    """A batch of `script` jobs submitted through the API (options the CLI has no flag for)."""
    body = {"tool_id": str(script_tool().pk), "hardware": {"cpu": 1, "memory": 256}, "jobs": [{"args": {"script": j}} for j in jobs]}
    response = make_client(user).post("/batches", {**body, **options}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["batch_id"]


def test_short_ids_are_shown_everywhere_and_taken_as_prefix_or_suffix(cli):
    """The bar showed `batch 01a2419c` (a prefix, which batches of the same minute share)
    and `status 01a2419c` was 'not an id'. Now every list shows the last 12 hex digits
    (the admin's short form), and any unambiguous prefix or suffix is taken."""
    ids = [json.loads(cli("submit", "echo", "--arg", f"message=m{n}", "--json").stdout)["batch_id"] for n in range(3)]
    first = ids[0]
    assert short_id(first) == first[-12:] and len(short_id(first)) == 12
    # ls and submit show the short form; ls rows are whole lines in a pipe.
    rows = cli("ls").stdout.splitlines()
    assert rows[0].split()[:2] == ["batch", "tool"] and len(rows) == 4, rows
    assert [row.split()[0] for row in rows[1:]] == [short_id(i) for i in ids], rows
    said = cli("submit", "echo", "--arg", "message=said").stdout
    assert said.startswith("submitted 1 job(s) of echo: batch ") and len(said.split()[-1]) == 12, said
    # A suffix, the admin's `…` form, a unique prefix, a whole id in capitals.
    for given in (short_id(first), "…" + short_id(first), first[-6:], first[:23], first.upper(), first.replace("-", "")):
        assert set(json.loads(cli("status", given, "--json").stdout)) >= {"succeeded", "failed"}, given
    # A prefix shared by all of them (ids are time-ordered): exit 2, the matches listed.
    shared = os.path.commonprefix(ids)
    assert len(shared.replace("-", "")) >= 4
    ambiguous = cli("status", shared, check=False)
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert (
        f"{shared!r} matches" in ambiguous.stderr and "batches of yours" in ambiguous.stderr and all(i in ambiguous.stderr for i in ids)
    ), ambiguous.stderr
    nothing = cli("status", "abcdefabcdef", check=False)
    assert nothing.returncode == 1 and "no batch of yours" in nothing.stderr, nothing.stderr
    assert cli("status", "abc", check=False).returncode == 2  # fewer than 4 digits: not an id
    # Jobs: short in the list, taken with their batch (either short), never alone.
    cli("watch", short_id(first), "--every", "0.2")
    job = json.loads(cli("jobs", first, "--json").stdout)[0]
    listed = cli("jobs", short_id(first)).stdout.splitlines()
    assert listed[1].split()[:2] == [short_id(job["job_id"]), "SUCCEEDED"], listed
    assert cli("logs", first[-8:], short_id(job["job_id"])).stdout == "m0\n"
    assert cli("logs", job["job_id"]).stdout == "m0\n"
    assert cli("why", short_id(first), job["job_id"][-5:]).stdout.splitlines()[0] == f"job       {job['job_id']}"
    alone = cli("logs", short_id(job["job_id"]), check=False)
    assert alone.returncode == 2 and "needs its batch" in alone.stderr, alone.stderr
    missing = cli("logs", short_id(first), "abcdefabcdef", check=False)
    assert missing.returncode == 1 and f"no job of batch {short_id(first)}" in missing.stderr, missing.stderr
    assert "had ended" in cli("cancel", short_id(first), short_id(job["job_id"])).stdout
    assert cli("rm", short_id(first)).stdout == f"deleted batch {short_id(first)}\n"
    assert cli("status", first, check=False).returncode == 1
    # `tools` in a pipe: whole rows, ids unsplit.
    tools = cli("tools").stdout.splitlines()
    assert all(len(row.split()[-1]) == 36 for row in tools[1:]) and len(tools) == len(json.loads(cli("tools", "--json").stdout)) + 1


def test_ls_states_cancel_and_retry_sentences_and_rm_confirmation(cli):
    """`ls` showed no state or progress; `cancel` printed raw JSON; `retry` had no
    --json; `rm` stopped running jobs without a word."""
    mixed = json.loads(cli("submit", "fail", "--sweep", "code=0,3", "--json").stdout)["batch_id"]
    cli("watch", mixed, "--every", "0.2", check=False)
    busy = json.loads(cli("submit", "script", "--sweep", "script=sleep 60,sleep 61", "--json").stdout)["batch_id"]
    wait_for(lambda: "running 2" in cli("status", busy).stdout, timeout=30)

    def rows() -> dict[str, list[str]]:
        found = cli("ls").stdout.splitlines()
        assert found[0].split() == ["batch", "tool", "state", "progress", "failed", "name", "created"], found
        return {row.split()[0]: row.split() for row in found[1:]}

    listed = rows()
    assert listed[short_id(mixed)][1:5] == ["fail", "failed", "2/2", "1"], listed
    assert listed[short_id(busy)][1:5] == ["script", "running", "0/2", "0"], listed
    assert cli("status", busy).stdout.startswith("2 job(s), running: running 2")
    assert cli("ls", "--last", "1").stdout.splitlines()[1].split()[0] == short_id(busy)

    # rm of a batch with running jobs: refused without a terminal, declined on one.
    refused = cli("rm", busy, check=False)
    assert refused.returncode == 2 and "2 running job(s)" in refused.stderr and "--yes" in refused.stderr, refused.stderr
    primary, secondary = pty.openpty()
    try:
        os.write(primary, b"n\n")
        asked = subprocess.run(
            [sys.executable, "-m", "client", "rm", short_id(busy)],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **cli.env},
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert asked.returncode == 1 and "Delete and stop them?" in asked.stderr and "nothing was deleted" in asked.stderr, asked
    assert "running 2" in cli("status", busy).stdout

    cancelled = cli("cancel", short_id(busy)).stdout
    assert cancelled.startswith(f"cancelled 2 job(s) of batch {short_id(busy)}") and "{" not in cancelled, cancelled
    wait_for(lambda: "failed 2" in cli("status", busy).stdout, timeout=30)
    assert cli("cancel", busy).stdout == f"batch {short_id(busy)}: nothing to cancel (every job had ended)\n"
    assert cli("rm", busy).stdout == f"deleted batch {short_id(busy)}\n"  # every job ended: no question

    assert json.loads(cli("retry", mixed, "--json").stdout) == {"changed": 1}
    cli("watch", mixed, "--every", "0.2", check=False)
    assert cli("retry", short_id(mixed)).stdout == f"retried 1 job(s) of batch {short_id(mixed)}\n"
    assert cli("rm", mixed, "--yes").returncode == 0


def test_logs_follow_a_waiting_job_says_why_and_ends_with_its_status(cli, alice, tmp_path):
    """`logs -f` on a queued job printed nothing for minutes and exited 0 with no final
    status, even for a cancelled job."""
    flag = tmp_path / "go"  # the workers of these tests run jobs unsealed: they see tmp_path
    waits = _api_batch(alice, [f"until [ -e {flag} ]; do sleep 0.1; done; echo done"] * 2, max_running=1)
    held = _api_batch(alice, ["sleep 60"] * 2, max_running=1)

    def follow(batch: str) -> tuple[str, subprocess.Popen]:
        """`logs -f` of the job that waits behind the other one of its batch."""

        def jobs() -> dict[str, str]:
            return {j["status"]: j["job_id"] for j in json.loads(cli("jobs", batch, "--json").stdout)}

        wait_for(lambda: set(jobs()) == {"RUNNING", "RUNNABLE"}, timeout=60, message=str(jobs()))
        job = jobs()["RUNNABLE"]
        follower = subprocess.Popen(
            [sys.executable, "-m", "client", "logs", short_id(batch), short_id(job), "-f", "--every", "0.1"],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **cli.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        return job, follower

    job, follower = follow(waits)
    try:
        flag.touch()  # the running job ends, the followed one runs
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert (follower.returncode, out) == (0, "done\n"), (out, err)
    lines = err.splitlines()
    assert lines[0].startswith(f"job {short_id(job)} is waiting (RUNNABLE): Its batch runs at most 1 job(s) at once"), lines
    assert "; place in line " in lines[0], lines
    assert lines[-1] == f"job {short_id(job)} SUCCEEDED", lines

    job, follower = follow(held)
    try:
        assert cli("cancel", held, short_id(job)).stdout == f"cancelled job {short_id(job)}\n"
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 1 and out == "", (out, err)
    assert "is waiting" in err and err.splitlines()[-1] == f"job {short_id(job)} FAILED: Cancelled by user", err
    cli("cancel", held)
    failed = json.loads(cli("submit", "fail", "--arg", "code=3", "--json").stdout)["batch_id"]
    ended = cli("logs", failed, json.loads(cli("jobs", failed, "--json").stdout)[0]["job_id"], "-f", check=False)
    assert ended.returncode == 1 and ended.stderr.splitlines()[-1].endswith("FAILED: exit code 3"), ended.stderr


def _sgr(text: str) -> set[str]:
    return set(re.findall(r"\x1b\[([0-9;]*)m", text))


def test_the_progress_bar_tells_time_and_colours_by_outcome(cli):
    """The bar had no elapsed time or ETA, and its done segment was red-pink while every
    job succeeded."""
    fine = json.loads(cli("submit", "script", "--sweep", "script=true,sleep 1,sleep 2", "--json").stdout)["batch_id"]
    watched = cli("watch", short_id(fine), "--every", "0.2", FORCE_COLOR="1", COLUMNS="200")
    assert f"batch {short_id(fine)} " in watched.stderr and "elapsed 0:0" in watched.stderr and "eta " in watched.stderr, watched.stderr
    colours = _sgr(watched.stderr)
    assert "32" in colours and not {"31", "91", "35", "95"} & colours, (colours, watched.stderr)  # green, never red
    assert watched.stdout.startswith(f"batch {short_id(fine)}: succeeded 3 (watched 0:0"), watched.stdout
    mixed = json.loads(cli("submit", "fail", "--sweep", "code=0,3", "--json").stdout)["batch_id"]
    watched = cli("watch", mixed, "--every", "0.2", check=False, FORCE_COLOR="1", COLUMNS="200")
    assert watched.returncode == 1 and {"31", "32"} <= _sgr(watched.stderr), watched.stderr
    # Piped (no terminal): the last line, whole, no colour.
    plain = cli("watch", mixed, check=False, COLUMNS="200")
    assert "\x1b" not in plain.stderr and "1/2" not in plain.stderr and "2/2  elapsed" in plain.stderr, plain.stderr


REDIRECTING = """
import http.server, sys
class Redirect(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.send_response(int(sys.argv[2]))
        self.send_header("Location", "https://127.0.0.1:" + sys.argv[1] + self.path)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>Moved</html>")
    do_GET = do_POST = do_DELETE = answer
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Redirect).serve_forever()
"""


@pytest.mark.parametrize("code", [301, 308])
def test_a_redirect_to_https_is_named(code):
    """Behind an HTTP -> HTTPS redirect the client said the service answered text/html."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", REDIRECTING, str(port), str(code)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=10)
        env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "BATCHES_URL": f"http://127.0.0.1:{port}", "BATCHES_TOKEN": "x"}
        for command in (["ls"], ["tools"], ["status", str(uuid.uuid4())], ["cancel", str(uuid.uuid4())]):
            done = subprocess.run([sys.executable, "-m", "client", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.startswith(f"batches: the service redirects to https://127.0.0.1:{port}/"), done.stderr
            assert done.stderr.rstrip().endswith(f": set BATCHES_URL to https://127.0.0.1:{port}"), done.stderr
    finally:
        server.terminate()
        server.wait()


class _Listing:
    """An Api whose lists are given, counting the items read (for client.ids)."""

    def __init__(self, items: list[dict]) -> None:
        self.items, self.read = items, 0

    def pages(self, path: str, **params: object):
        for item in self.items:
            self.read += 1
            yield item


@pytest.mark.django_db(transaction=False)
def test_short_job_ids_read_no_more_of_a_batch_than_they_need(monkeypatch):
    """A short job id is looked up in its batch's job list: the 12-digit form stops at
    its match, a shorter one reads the list to be sure, and no lookup reads past
    JOB_SCAN_LIMIT jobs (a batch of 1,000,000 jobs is 1,000 requests)."""
    from client import ids

    jobs = [{"job_id": str(uuid.uuid4()), "status": "RUNNABLE", "job_argument_list": []} for _ in range(50)]
    wanted = jobs[10]["job_id"]
    api = _Listing(jobs)
    assert ids.resolve_job(api, str(uuid.uuid4()), ids.short(wanted)) == wanted and api.read == 11
    api = _Listing(jobs)
    assert ids.resolve_job(api, str(uuid.uuid4()), wanted[-8:]) == wanted and api.read == 50
    assert ids.resolve_job(api, str(uuid.uuid4()), wanted) == wanted  # whole: nothing read
    twins = [{**jobs[0], "job_id": jobs[0]["job_id"][:-4] + "beef"}, {**jobs[1], "job_id": jobs[1]["job_id"][:-4] + "beef"}]
    with pytest.raises(ids.AmbiguousId) as caught:
        ids.resolve_job(_Listing(twins), str(uuid.uuid4()), "…beef")
    assert caught.value.exit_code == 2 and twins[0]["job_id"] in str(caught.value) and twins[1]["job_id"] in str(caught.value)
    monkeypatch.setattr(ids, "JOB_SCAN_LIMIT", 20)
    api = _Listing(jobs)
    with pytest.raises(ids.AmbiguousId, match="at most 20 jobs"):
        ids.resolve_job(api, str(uuid.uuid4()), ids.short(jobs[30]["job_id"]))
    assert api.read == 21
