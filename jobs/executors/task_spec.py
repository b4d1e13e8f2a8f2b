"""A task attempt's plan for `task_runner.py`: where each container path lives on the
host, and the sandbox each step runs in.

A task (a batch's `task`, written by `jobs.tasks`) lists steps (each with its command,
an optional root filesystem, working directory, stdin/stdout/stderr paths, environment
and `ignore_error`), inputs, outputs and volumes, all by their paths inside the
container. Every directory those paths need is *mirrored*: a directory of the
attempt's own (`<workdir>/m/<n>`, on disk, the job account's) bound at that path in
every step's sandbox, so that what one step writes there the next one reads, and the
runner (outside the sandboxes) can put inputs in and take outputs out. Nothing else
of the host is writable inside a step, and only the system's programs and libraries
(or the step's root filesystem) are visible.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import reason_codes
from jobs.executors.base import Outcome
from jobs.executors.isolation import SECCOMP, Isolation, JobUser, system_view

RUNNER = Path(__file__).with_name("task_runner.py")
MOUNT = shutil.which("mount", path="/usr/bin:/bin:/usr/sbin:/sbin")
UMOUNT = shutil.which("umount", path="/usr/bin:/bin:/usr/sbin:/sbin")
PYTHON = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
TAIL_BYTES = 10_000  # of each step's stdout and stderr, kept for the task's logs
CLUSTER_SECCOMP_FD = 10  # where a cluster node's task script gives the filter (slurm_task.SECCOMP_FD)
STEP_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_dirs(task: dict[str, Any]) -> list[str]:
    """The outermost directories the task's paths need, sorted (see the module)."""
    wanted = set(task.get("volumes", []))
    for item in [*task.get("inputs", []), *task.get("outputs", [])]:
        if item.get("pattern_root"):
            wanted.add(item.get("path_prefix") or item["pattern_root"])
        else:
            wanted.add(item["path"] if item.get("type") == "DIRECTORY" else os.path.dirname(item["path"]))
    for step in task["steps"]:
        wanted.update(os.path.dirname(step[name]) for name in ("stdin", "stdout", "stderr") if step.get(name))
        if step.get("workdir"):
            wanted.add(step["workdir"])
    ordered = sorted(wanted)
    return [d for d in ordered if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in ordered)]


class Mirrors:
    """Container directories and the host directories bound at them, relative to the
    runner's working directory (the attempt's directory, here or on a cluster's node)."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.pairs = [(inside, f"m/{n}") for n, inside in enumerate(container_dirs(task))]

    def host(self, path: str) -> str:
        """The host path (relative) of a container path inside a mirrored directory."""
        for inside, host in self.pairs:
            if path == inside:
                return host
            if path.startswith(inside.rstrip("/") + "/"):
                return host + path[len(inside.rstrip("/")) :]
        raise ValueError(f"{path} is in no mirrored directory")


def sandbox_head(*, isolation: Isolation, root: str | None) -> list[str]:
    """bubblewrap's argv for one step up to its own binds (see
    `jobs.executors.isolation.sandbox_argv`, whose choices it shares: no user namespaces
    inside, no network unless the site allows it); the runner adds the seccomp filter,
    the mirrored directories, the working directory and the command."""
    if isolation.bwrap is None:
        raise ValueError("a task's steps need the sandbox")
    out = [isolation.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    if isolation.network:
        out.append("--share-net")
    out += image_binds(root) if root is not None else system_view()
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (the sandbox's own /tmp)
    return out


def image_binds(root: str) -> list[str]:
    """An unpacked image's top-level entries, read-only, on the sandbox's own root (a
    tmpfs, so the task's directories can be made beside them); /proc, /dev and /tmp
    are the sandbox's own."""
    out: list[str] = []
    for name in sorted(os.listdir(root)):
        if name in ("proc", "dev", "tmp"):
            continue
        path = os.path.join(root, name)
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), f"/{name}"]
        else:
            out += ["--ro-bind", path, f"/{name}"]
    return out


def runner_plan(*, task: dict[str, Any], isolation: Isolation, seccomp_fd: int | None, env: dict[str, str], results: str) -> dict[str, Any]:
    """The runner's spec (see task_runner.py) for `task`: host paths relative to the
    runner's working directory; `results` where it writes what happened."""
    mirrors = Mirrors(task)
    steps = []
    for index, step in enumerate(task["steps"]):
        steps.append(
            {
                "index": index,
                "name": os.path.basename(step["command"][0]),
                "head": sandbox_head(isolation=isolation, root=step.get("root")),
                "workdir": step.get("workdir") or "/",
                "command": step["command"],
                "env": {**env, "PATH": STEP_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "BATCH_WORK_DIR": "/tmp", **step.get("env", {})},  # noqa: S108
                "ignore_error": bool(step.get("ignore_error")),
                **{name: mirrors.host(step[name]) for name in ("stdin", "stdout", "stderr") if step.get(name)},
            }
        )
    inputs = [{**item, "host_path": mirrors.host(item["path"])} for item in task.get("inputs", [])]
    outputs = []
    for item in task.get("outputs", []):
        planned = {**item}
        if item.get("pattern_root"):
            planned.update(
                host_pattern=mirrors.host(item["pattern_root"]) + item["path"][len(item["pattern_root"]) :],
                host_prefix=mirrors.host(item["path_prefix"]) if item.get("path_prefix") else mirrors.host(item["pattern_root"]),
            )
        else:
            planned["host_path"] = mirrors.host(item["path"])
        outputs.append(planned)
    return {
        "mirrors": [list(pair) for pair in mirrors.pairs],
        "inputs": inputs,
        "steps": steps,
        "outputs": outputs,
        "results": results,
        "seccomp_fd": seccomp_fd,
        "tail_bytes": TAIL_BYTES,
    }


def runner_argv(workdir: Path) -> list[str]:
    """How the attempt starts: the system's Python (the job account may not read the
    service's virtualenv) on the runner's copy in the attempt's directory."""
    task_dir = workdir / ".task"
    return [PYTHON or sys.executable, "-I", "-S", str(task_dir / "task_runner.py"), str(task_dir / "spec.json")]


def prepare(
    *,
    task: dict[str, Any],
    workdir: Path,
    isolation: Isolation,
    seccomp_fd: int | None,
    env: dict[str, str],
    user: JobUser | None,
    memory_bytes: int,
) -> None:
    """The runner and its spec in `<workdir>/.task` (no step's sandbox sees it), the
    job account's, so the runner can write its results there; and, when the worker is
    root, the task's directories (`<workdir>/m`) on a tmpfs of the attempt's memory
    size: in memory, as a sealed job's working directory is, so a step cannot fill the
    worker's disk, and what it writes there counts against its memory limit."""
    if os.geteuid() == 0 and MOUNT and user is not None:
        mirrors = workdir / "m"
        mirrors.mkdir()
        options = f"size={memory_bytes},mode=0700,uid={user.uid},gid={user.gid},nosuid,nodev"
        subprocess.run([MOUNT, "-t", "tmpfs", "-o", options, "batches-task", str(mirrors)], check=True, capture_output=True)  # noqa: S603
    task_dir = workdir / ".task"
    task_dir.mkdir()
    shutil.copyfile(RUNNER, task_dir / "task_runner.py")
    plan = runner_plan(
        task=task, isolation=isolation, seccomp_fd=seccomp_fd, env=env, results=str(local_results(Path()))
    )  # relative: the runner works in the attempt's directory
    (task_dir / "spec.json").write_text(json.dumps(plan))
    if user is not None:
        for path in (task_dir, task_dir / "task_runner.py", task_dir / "spec.json"):
            os.chown(path, user.uid, user.gid)


def release(workdir: Path) -> None:
    """Unmount the task's directories (see `prepare`), if they are mounted."""
    mirrors = workdir / "m"
    if UMOUNT and os.path.ismount(mirrors):
        subprocess.run([UMOUNT, "--lazy", str(mirrors)], check=False, capture_output=True)  # noqa: S603


def local_results(workdir: Path) -> Path:
    return workdir / ".task" / "results.json"


def read_results(path: Path) -> dict[str, Any] | None:
    """What the runner wrote of the attempt at `path` (see task_runner.py), or None if
    nothing (it never started, or its file is not whole JSON)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def task_outcome(outcome: Outcome, *, results: dict[str, Any] | None) -> Outcome:
    """`outcome` (the runner's, as any program's) told as the task's: a system error
    (an input not fetched, an output not delivered) or the step that failed, by name."""
    if results is None or outcome.reason_code not in (reason_codes.EXIT_CODE, reason_codes.SUCCEEDED):
        return replace(outcome, task_log=results)
    if results.get("system_error"):
        reason = f"system error: {results['system_error']}"
        return replace(outcome, succeeded=False, reason=reason[:500], reason_code=reason_codes.STAGING_FAILED, task_log=results)
    stopped = [(n, log) for n, log in enumerate(results.get("steps", [])) if log.get("exit_code") and not log.get("ignore_error")]
    if not outcome.succeeded and stopped:
        n, log = stopped[-1]
        reason = f"step {n + 1} of {results.get('planned', '?')} ({log.get('name', '?')}) ended with exit code {log['exit_code']}"
        return replace(outcome, reason=reason[:500], task_log=results)
    return replace(outcome, task_log=results)


# A task on a cluster: the runner and its spec sit in the submission's shared folder
# beside the task files (the account's to read), and the runner writes its results into
# the folder's `status/`, which the worker reads when the attempt ends.
CLUSTER_RUNNER = "task_runner.py"


def cluster_results(folder: Path, index: int) -> Path:
    return folder / "status" / f"{index}.task.json"


def runner_argv_cluster(folder: Path, index: int) -> list[str]:
    return [PYTHON or "python3", "-I", "-S", str(folder / CLUSTER_RUNNER), str(folder / f"{index}.task-spec.json")]


def write_for_cluster(*, task: dict[str, Any], folder: Path, index: int, isolation: Isolation, env: dict[str, str]) -> None:
    """The runner (once per submission) and task `index`'s spec in the submission's
    folder; the node's task script gives the runner the seccomp filter on its fd 10
    (`slurm_task.SECCOMP_FD`) and a working directory of its own, where the mirrors go."""
    if not (folder / CLUSTER_RUNNER).exists():
        shutil.copyfile(RUNNER, folder / CLUSTER_RUNNER)
        (folder / CLUSTER_RUNNER).chmod(0o644)
    plan = runner_plan(
        task=task,
        isolation=isolation,
        seccomp_fd=CLUSTER_SECCOMP_FD if SECCOMP is not None else None,
        env=env,
        results=str(cluster_results(folder, index)),
    )
    (folder / f"{index}.task-spec.json").write_text(json.dumps(plan))
