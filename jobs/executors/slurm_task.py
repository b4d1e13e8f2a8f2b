#!/usr/bin/env python3
"""One task of a submission to Slurm: the job script that `sbatch` runs on a node.

    slurm_task.py SUBMISSION_DIR        (the task's index is $SLURM_ARRAY_TASK_ID)

Standard library only, and nothing of the project is imported: the node needs a Python 3
and the shared filesystem, not the service's virtualenv. Everything the task runs comes
from `<dir>/<index>.json`, written by the worker (`jobs.executors.slurm`): the argv (a
list, run without a shell: argument values are never interpreted), the environment,
the log file, the attempt number and the timeout. The task:

- writes `<index>.start` (JSON: node, log offset) when it begins, so the worker learns
  of the start without asking the controller;
- appends the program's stdout and stderr to the job's log (a line marks attempt 2 on);
- runs the program in a working directory of its own on the node, removed at the end,
  in a process group of its own; forwards SIGTERM/SIGINT (scancel, Slurm's time limit)
  to the group; stops it itself at the batch's timeout (Slurm's time limit is minutes,
  and comes later as a backstop);
- writes `<index>.exit` (JSON: code, signal, timed_out, error) when it ends, so the
  outcome is known even after the controller has forgotten the job; then exits with the
  program's status, so Slurm's own state (COMPLETED, FAILED) matches.

Both status files are written to a temporary name and renamed: a reader never sees half.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when the task stops the program


def write_atomic(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def stop_group(pgid: int, child: subprocess.Popen) -> None:
    """SIGTERM the program's group, a grace period, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        child.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        child.wait()


def run(task: dict, base: str) -> dict:
    status = {"code": None, "signal": None, "timed_out": False, "error": ""}
    root = task.get("work_root") or os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 (the node's own)
    os.makedirs(root, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"batches-{task['job_id']}.{task['attempt']}-", dir=root)
    env = dict(task["env"], HOME=workdir, TMPDIR=workdir, BATCH_WORK_DIR=workdir)
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME"):
        if name in os.environ:
            env[name] = os.environ[name]
    try:
        with open(task["log"], "ab") as log:
            offset = log.tell()
            write_atomic(f"{base}.start", json.dumps({"node": socket.gethostname(), "log_offset": offset}))
            if task["attempt"] > 1:
                log.write(f"--- attempt {task['attempt']} ---\n".encode())
                log.flush()
            try:
                child = subprocess.Popen(  # noqa: S603 (an argv list, never a shell)
                    task["argv"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                status["error"] = f"could not start {task['argv'][0]}: {exc.strerror or exc}"
                log.write(f"{status['error']}\n".encode())
                return status

            def forward(signum: int, frame: object) -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signum)

            signal.signal(signal.SIGTERM, forward)
            signal.signal(signal.SIGINT, forward)
            deadline = time.monotonic() + float(task["timeout"])
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                status["timed_out"] = True
                stop_group(child.pid, child)
            # Whatever the program left behind in its group goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            code = child.returncode
            if code < 0:
                status["signal"] = -code
            else:
                status["code"] = code
            return status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    directory = sys.argv[1]
    index = os.environ.get("SLURM_ARRAY_TASK_ID", "0")
    base = os.path.join(directory, index)
    with open(f"{base}.json") as handle:
        task = json.load(handle)
    try:
        status = run(task, base)
    except Exception as exc:  # the node could not run the task at all: say why
        status = {"code": None, "signal": None, "timed_out": False, "error": f"the task failed on {socket.gethostname()}: {exc}"}
    write_atomic(f"{base}.exit", json.dumps(status))
    if status["code"] is not None:
        return min(status["code"], 255)
    return 128 + status["signal"] if status["signal"] else 1


if __name__ == "__main__":
    sys.exit(main())
