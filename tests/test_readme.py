"""The README's first five minutes, as a new user runs them: a fresh clone, `make run`,
then the lines it prints, pasted into a shell (the curl submit line, the status line
with the batch id, the command-line client's line), then the README's own block of
curl lines that reads the batch back. Fails when they drift apart.

The clone reuses this checkout's virtualenv (VENV=...): installing the dependencies
again would only measure the package index."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.worker_helpers import ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shell(line: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    return done.stdout


def readme_read_back_block(readme: str) -> str:
    """The sh block that follows 'read the batch back' in the README."""
    after = readme[readme.index("read the batch back") :]
    return re.search(r"```sh\n(.*?)```", after, re.S).group(1)


def test_make_run_and_its_printed_lines_work_on_a_fresh_clone(tmp_path):
    if not (ROOT / ".git").exists() or not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs a git checkout with its virtualenv (make venv)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    # The clone's requirements are as old as can be, so make takes the shared virtualenv
    # as installed and leaves it alone: a reinstall would rewrite its bin/batches to run
    # the client from this (temporary) clone.
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(clone / name, (0, 0))
    client_script = (ROOT / ".venv" / "bin" / "batches").read_bytes() if (ROOT / ".venv" / "bin" / "batches").exists() else None
    port = _free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    # As root, the README asks for an account to run jobs under (a root worker without
    # one refuses to start rather than run them as root): the machine's, as CI sets it.
    if os.geteuid() == 0:
        if not os.environ.get("BATCHES_JOB_USER"):
            pytest.skip("as root, make run needs BATCHES_JOB_USER (the README's sealed-jobs set-up)")
        env["BATCHES_JOB_USER"] = os.environ["BATCHES_JOB_USER"]
    make = subprocess.Popen(
        ["make", "run", f"PORT={port}", f"VENV={ROOT / '.venv'}"],
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
        submit_line = next(line.strip() for line in printed if line.strip().startswith("curl") and " -d " in line)
        status_line = next(
            line.strip() for line in printed if line.strip().startswith("curl") and line.strip().endswith("/batches/BATCH_ID")
        )
        client_line = next(line.strip() for line in printed if "batches submit" in line)
        while True:  # the server comes up after the lines are printed
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "".join(printed)
                time.sleep(0.2)
        batch = json.loads(_shell(submit_line, clone, env))
        assert batch["n_jobs"] == 2, batch
        while True:
            counts = json.loads(_shell(status_line.replace("BATCH_ID", batch["batch_id"]), clone, env))
            if counts.get("succeeded") == 2:
                break
            assert time.monotonic() < deadline and not counts.get("failed"), counts
            time.sleep(0.3)
        assert "succeeded 2" in _shell(client_line, clone, env)
        # The README's block, pasted line by line into one shell as it is: it reads this
        # server's address (a port other than the default) from data/env.
        block = readme_read_back_block((clone / "README.md").read_text())
        assert ":8000" not in block
        lines = block.splitlines()
        out = _shell("set -eu -o pipefail\n" + "\n".join(f"{line}\necho '<<end of line>>'" for line in lines), clone, env)
        answers = out.split("<<end of line>>\n")[:-1]
        assert len(answers) == len(lines), out
        assert all(answer.strip() for line, answer in zip(lines, answers, strict=True) if line.startswith("curl -s -H")), out
        assert json.loads(answers[lines.index(next(x for x in lines if x.endswith("$API/batches/$BATCH_ID")))])["succeeded"] == 2, out
        assert "hello" in answers[-2], "the first job's log"
        assert answers[-1] == "", "the DELETE answers 204, no body"
        if client_script is not None:
            assert (ROOT / ".venv" / "bin" / "batches").read_bytes() == client_script, "the shared virtualenv was changed"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
