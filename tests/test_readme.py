"""The README as a new user runs it: a fresh clone, `make run` on a port other than the
default, then the lines it prints, pasted into a shell (the curl submit line, the status
line with the batch id, the command-line client's line), then the README's own blocks,
pasted as they are: the curl lines that read the batch back, the submissions of
"A batch can wait for others", "Retries by rule" and "Who runs next", the attempts and
the event feed, and the py-tes example of "GA4GH TES". Fails when they drift apart.

One `make run` serves every test of the module. The clone reuses this checkout's
virtualenv (VENV=...): installing the dependencies again would only measure the
package index."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.worker_helpers import ROOT

pytestmark = pytest.mark.slow

PYTHON = ROOT / ".venv" / "bin" / "python"
END = "<<end of block>>"


@dataclass
class Run:
    clone: Path
    env: dict[str, str]
    printed: list[str]
    deadline: float

    def line(self, pick) -> str:
        return next(line.strip() for line in self.printed if pick(line.strip()))

    def shell(self, script: str) -> str:
        return _shell(script, self.clone, self.env)

    def get(self, path: str):
        """GET a route of the server, as the demo user of data/env."""
        settings = dict(line.split("=", 1) for line in (self.clone / "data" / "env").read_text().splitlines())
        answer = httpx.get(settings["BATCHES_URL"] + path, headers={"Authorization": f"Bearer {settings['BATCHES_TOKEN']}"}, timeout=10)
        return answer.json()

    def wait_for(self, batch_id: str, *, succeeded: int) -> None:
        while (counts := self.get(f"/batches/{batch_id}"))["succeeded"] < succeeded:
            assert time.monotonic() < self.deadline and not counts["failed"], counts
            time.sleep(0.3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shell(line: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    return done.stdout


def readme_block(readme: str, after: str, kind: str = "sh") -> str:
    """The first ```kind block after the text `after` in the README."""
    rest = readme[readme.index(after) :]
    return re.search(rf"```{kind}\n(.*?)```", rest, re.S).group(1)


def readme_read_back_block(readme: str) -> str:
    """The sh block that follows 'read the batch back' in the README."""
    return readme_block(readme, "read the batch back")


def _pasted(blocks: list[str]) -> str:
    """The blocks as one shell session, each answer followed by END on a line of its own
    (curl -s ends no answer with a newline), stopping at the first failure."""
    return "set -eu -o pipefail\n" + "".join(f"{block}echo; echo '{END}'\n" for block in blocks)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    if not (ROOT / ".git").exists() or not PYTHON.exists():
        pytest.skip("needs a git checkout with its virtualenv (make venv)")
    tmp_path = tmp_path_factory.mktemp("readme")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    # The clone's requirements are as old as can be, so make takes the shared virtualenv
    # as installed and leaves it alone: a reinstall would rewrite its bin/batches to run
    # the client from this (temporary) clone.
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(clone / name, (0, 0))
    client = ROOT / ".venv" / "bin" / "batches"
    client_script = client.read_bytes() if client.exists() else None
    port = _free_port()
    # VENV: the README's `make manage` lines, pasted, use the shared virtualenv too.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "VENV": str(ROOT / ".venv")}
    # As root, the README asks for an account to run jobs under (a root worker without
    # one refuses to start rather than run them as root): the machine's, as CI sets it.
    if os.geteuid() == 0:
        if not os.environ.get("BATCHES_JOB_USER"):
            pytest.skip("as root, make run needs BATCHES_JOB_USER (the README's sealed-jobs set-up)")
        env["BATCHES_JOB_USER"] = os.environ["BATCHES_JOB_USER"]
    make = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not any("batches submit" in line for line in printed):
            assert time.monotonic() < deadline and make.poll() is None, "".join(printed)
            printed.append(make.stdout.readline())
        while True:  # the server comes up after the lines are printed
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "".join(printed)
                time.sleep(0.2)
        yield Run(clone=clone, env=env, printed=printed, deadline=time.monotonic() + 120)
        if client_script is not None:
            assert client.read_bytes() == client_script, "the shared virtualenv was changed"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def test_make_run_and_its_printed_lines_work_on_a_fresh_clone(run):
    submit_line = run.line(lambda line: line.startswith("curl") and " -d " in line)
    status_line = run.line(lambda line: line.startswith("curl") and line.endswith("/batches/BATCH_ID"))
    client_line = run.line(lambda line: "batches submit" in line)
    batch = json.loads(run.shell(submit_line))
    assert batch["n_jobs"] == 2, batch
    while True:
        counts = json.loads(run.shell(status_line.replace("BATCH_ID", batch["batch_id"])))
        if counts.get("succeeded") == 2:
            break
        assert time.monotonic() < run.deadline and not counts.get("failed"), counts
        time.sleep(0.3)
    assert "succeeded 2" in run.shell(client_line)
    # The README's block, pasted line by line into one shell as it is: it reads this
    # server's address (a port other than the default) from data/env.
    block = readme_read_back_block((run.clone / "README.md").read_text())
    assert ":8000" not in block
    lines = block.splitlines()
    out = run.shell("set -eu -o pipefail\n" + "\n".join(f"{line}\necho '<<end of line>>'" for line in lines))
    answers = out.split("<<end of line>>\n")[:-1]
    assert len(answers) == len(lines), out
    assert all(answer.strip() for line, answer in zip(lines, answers, strict=True) if line.startswith("curl -s -H")), out
    assert json.loads(answers[lines.index(next(x for x in lines if x.endswith("/batches/$BATCH_ID")))])["succeeded"] == 2, out
    assert "hello" in answers[-2], "the first job's log"
    assert answers[-1] == "", "the DELETE answers 204, no body"


def test_the_readmes_submission_blocks_work_pasted(run):
    """The curl blocks of dependencies, retry rules and priority, the attempts and the
    event feed, pasted in the README's order into one shell after `. data/env`: each
    reads the server and token from data/env and takes its ids from earlier answers."""
    readme = (run.clone / "README.md").read_text()
    # A batch of the user's own to depend on, as the README's first steps leave one.
    first = json.loads(run.shell(run.line(lambda line: line.startswith("curl") and " -d " in line)))
    run.wait_for(first["batch_id"], succeeded=2)
    submissions = [
        readme_block(readme, "The Batch shape shows `depends_on` as submitted"),
        readme_block(readme, "`max_attempts` (give one of the two, or both equal)"),
        readme_block(readme, "most that many of its jobs at once"),
    ]
    for block in submissions:
        assert "<id>" not in block and "$TOKEN" not in block and ":8000" not in block, block
    out = run.shell(_pasted([readme_block(readme, "read the batch back").splitlines()[0] + "\n", *submissions]))
    answers = [json.loads(answer) if answer.strip() else None for answer in out.split(f"{END}\n")[:-1]]
    assert answers[0] is None and len(answers) == 4, out
    after, retried, urgent = answers[1:]
    assert after["depends_on"] == [{"batch_id": first["batch_id"], "condition": "succeeded"}], after
    assert [rule["action"] for rule in retried["retry"]["rules"]] == ["exit", "retry", "exit"], retried
    assert retried["retry"]["attempts"] == 3, retried
    assert (urgent["priority"], urgent["max_running"]) == (10, 5), urgent
    for batch in (after, retried, urgent):
        run.wait_for(batch["batch_id"], succeeded=1)
    # Then the attempts of the newest batch (the urgent one) and the event feed.
    attempts_block = readme_block(readme, "carries the last ended attempt's figures as `usage`")
    feed_block = readme_block(readme, "batch's last job ends, oldest first")
    out = run.shell(_pasted(["set -a; . data/env; set +a\n", attempts_block, feed_block]))
    _, attempts, feed = (json.loads(answer) if answer.strip() else None for answer in out.split(f"{END}\n")[:-1])
    assert [(a["attempt"], a["reason_code"]) for a in attempts] == [(1, "succeeded")], attempts
    assert len(feed) == 3 and feed[0]["type"].startswith("job."), feed


def test_the_readmes_fair_share_blocks_work_pasted(run):
    """`batches shares`, as the README runs it (the clone's own client)."""
    block = readme_block((run.clone / "README.md").read_text(), "`GET /shares` (and `batches shares`)")
    lines = [line + "\n" for line in block.replace(".venv/bin/batches", f"{PYTHON} -m client").splitlines()]
    out = run.shell(_pasted(["set -a; . data/env; set +a\n", *lines]))
    table, as_json = out.split(f"{END}\n")[1:3]
    assert "demo" in table, table
    assert [row["username"] for row in json.loads(as_json)] == ["demo"], as_json


def test_the_readmes_py_tes_example_works_pasted(run):
    """The set-up lines and the ten lines of py-tes, against make run's server: the
    demo user allowed its own commands, the demo catalog's alpine image."""
    while not (ready := run.get("/readyz"))["workers"]:  # make run's worker registers a moment after the server is up
        assert time.monotonic() < run.deadline, f"make run's worker did not register: {ready}"
        time.sleep(0.2)
    if not ready["isolation"].get("sandbox"):
        assert not os.environ.get("BATCHES_REQUIRE_ISOLATION"), f"BATCHES_REQUIRE_ISOLATION is set: {ready}"
        pytest.skip(f"TES tasks run only sealed, and make run's worker seals nothing here (readyz: {ready})")
    readme = (run.clone / "README.md").read_text()
    example = readme_block(readme, "py-tes (`pip install py-tes`", kind="python")
    assert ":8000" not in example
    assert len([line for line in example.splitlines() if line.strip()]) == 10, "the README says ten lines of code"
    setup = readme_block(readme, "To try it on `make run`'s server")
    try:
        out = run.shell(f"set -eu -o pipefail\n{setup}\n{PYTHON} - <<'EXAMPLE'\n{example}EXAMPLE\n")
    except AssertionError:
        # What the task came to, as its owner sees it: the example's traceback does not say.
        print(json.dumps(run.get("/ga4gh/tes/v1/tasks?view=FULL"), indent=1))
        raise
    assert out.split()[-1] == "HELLO", out
