#!/usr/bin/env python3
"""Runs one task attempt's steps in order: the program a task job's attempt starts.

    python3 -I -S task_runner.py SPEC_JSON

Standard library only, nothing of the project imported: the worker copies this file
into the attempt's directory and runs it with the system's Python as the job's account,
inside the attempt's cgroup but outside any sandbox. Each step (a TES executor) runs in
a sandbox of its own whose argv the worker wrote into the spec (`jobs.executors.task_spec`):
the runner never builds a command, and argument values are never interpreted.

What it does, in order, writing `results` (JSON) after every stage so the worker can
tell what happened however the attempt ends:

1. inputs: each is written (`content`), copied from a host path the worker checked was
   inside the caller's filesystems (`source`; symbolic links are not followed), or,
   when the spec says why it cannot be fetched (`error`), the task stops there with
   that reason as a system error;
2. steps: each sandbox's argv, stdin from a file, stdout and stderr drained from pipes
   into the attempt's log (this process's stdout, which the worker caps) and, when
   asked, into files; the last `tail_bytes` of each kept for the task's logs. A step
   that fails stops the task unless it says `ignore_error`;
3. outputs (only when every step that counts succeeded): files and directories copied
   to their destinations (regular files and directories only: a link a step made is
   not followed), or a system error naming the output.

Exit status: 0 when the task succeeded; the failing step's exit code (1 if it was
killed); 125 on a system error (the results say which).
"""

import contextlib
import glob
import json
import os
import selectors
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

SYSTEM_ERROR_STATUS = 125
READ_SIZE = 1 << 16
BWRAP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}  # bubblewrap's own; a step's goes in with --setenv
FETCH_TIMEOUT = 60  # seconds without a byte from an http(s) input's host


class SystemError_(Exception):  # noqa: N801 (not the builtin SystemError)
    """A stage outside the steps failed: the task is not to blame on its own commands."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Results:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict = {"start_time": now(), "end_time": None, "steps": [], "outputs": [], "system_error": None}

    def save(self) -> None:
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as handle:
            json.dump(self.data, handle)
        os.replace(temporary, self.path)


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(root: str, relative: str, *, create: bool) -> int:
    """The directory `relative` below `root` (a filesystem's root, as the operator
    configured it), each part opened without following a link: a link in the caller's
    filesystem (any job of theirs may make one) leads nowhere. With `create`, missing
    parts are made."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in [p for p in relative.split("/") if p]:
            if part in (".", ".."):
                raise SystemError_(f"{relative}: . and .. are not followed")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise SystemError_(f"{os.path.join(root, relative)}: {part} is not a directory (links are not followed)") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(name: str, flags: int, *, dir_fd: int | None = None, mode: int = 0o666) -> int:
    """A regular file, never through a link, never blocking on a FIFO or a device."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SystemError_(f"{name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def copy_in(dir_fd: int, name: str, target: str) -> None:
    """`name` in the open directory `dir_fd` (a file or a directory of the caller's
    filesystem) to `target` in a task directory; links are not followed."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise SystemError_(f"{name}: {exc.strerror or exc} (links are not followed)") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            os.makedirs(target, exist_ok=True)
            for entry in os.scandir(fd):
                if not entry.is_symlink():
                    copy_in(fd, entry.name, os.path.join(target, entry.name))
            return
        if not stat.S_ISREG(mode):
            raise SystemError_(f"{name} is not a regular file or directory")
        os.set_blocking(fd, True)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with os.fdopen(os.dup(fd), "rb") as reader, open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer)
    finally:
        os.close(fd)


def stage_inputs(inputs: list[dict]) -> None:
    for item in inputs:
        if item.get("error"):
            raise SystemError_(item["error"])
        target = item["host_path"]
        if item.get("fetch"):
            fetch(item["fetch"], target)
        elif item.get("content") is not None:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(item["content"])
        else:
            parent, name = os.path.split(item["relative"])
            try:
                folder = open_beneath(item["fs_root"], parent, create=False)
                try:
                    copy_in(folder, name, target)
                finally:
                    os.close(folder)
            except SystemError_ as exc:
                raise SystemError_(f"input {item['url']}: {exc}") from exc
            except OSError as exc:
                raise SystemError_(f"input {item['url']}: {exc.strerror or exc}") from exc


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect is an error: the operator allowed this host, not another


def fetch(url: str, target: str) -> None:
    """An http(s) input from a host the operator allows (checked by the service)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(url, timeout=FETCH_TIMEOUT) as response, open(target, "wb") as writer:  # noqa: S310 (http(s) only, checked)
            shutil.copyfileobj(response, writer)
    except (OSError, urllib.error.URLError) as exc:
        raise SystemError_(f"input {url} could not be fetched: {getattr(exc, 'reason', None) or exc}") from exc


def step_argv(step: dict, *, mirrors: list[list[str]], seccomp_fd: int | None) -> list[str]:
    """The step's sandbox: the worker's head, then the filter, the mirrored directories
    (made absolute here: the worker does not know this directory on a cluster's node),
    the working directory and the command."""
    argv = list(step["head"])
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    for inside, host in mirrors:
        argv += ["--bind", os.path.abspath(host), inside]
    # The step's environment is the sandbox's, never bubblewrap's own: a variable such
    # as LD_PRELOAD would run code in bubblewrap, outside the sandbox it is making.
    argv.append("--clearenv")
    for name, value in step["env"].items():
        argv += ["--setenv", name, value]
    return [*argv, "--chdir", step["workdir"], "--", *step["command"]]


def mirrored(path: str) -> str:
    """`path` (relative, in a mirrored directory) once its links are known to stay there:
    a step may have made a link in a mirror (its container path is all it meant), and
    this process, outside the sandbox, must not follow it to the host's files."""
    top = os.path.realpath("m")
    real = os.path.realpath(path)
    if not real.startswith(top + os.sep):
        raise SystemError_(f"{path} leads out of the task's directories (a link made by a step)")
    return real


def open_mirrored(path: str, flags: int) -> int:
    return open_regular(mirrored(path), flags, mode=0o600)


def run_step(step: dict, *, mirrors: list[list[str]], seccomp_fd: int | None, tail_bytes: int) -> dict:
    """One step's sandbox, its output drained into our stdout, its files and tails."""
    if seccomp_fd is not None:
        os.lseek(seccomp_fd, 0, os.SEEK_SET)  # bubblewrap reads the filter to its end each time
    log = {"name": step["name"], "ignore_error": step["ignore_error"], "start_time": now(), "end_time": None, "exit_code": None}
    try:
        stdin = os.fdopen(open_mirrored(step["stdin"], os.O_RDONLY), "rb") if step.get("stdin") else subprocess.DEVNULL
        files = {
            name: os.fdopen(open_mirrored(step[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") if step.get(name) else None
            for name in ("stdout", "stderr")
        }
    except OSError as exc:
        raise SystemError_(f"step {step['index'] + 1}: {exc.filename}: {exc.strerror or exc}") from exc
    tails = {"stdout": bytearray(), "stderr": bytearray()}
    try:
        process = subprocess.Popen(  # noqa: S603 (an argv the worker built; no shell)
            step_argv(step, mirrors=mirrors, seccomp_fd=seccomp_fd),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=BWRAP_ENV,
            pass_fds=(seccomp_fd,) if seccomp_fd is not None else (),
        )
    except OSError as exc:
        raise SystemError_(f"could not start the sandbox of step {step['index'] + 1}: {exc.strerror or exc}") from exc
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    open_streams = 2
    while open_streams:
        for key, _ in selector.select():
            chunk = os.read(key.fileobj.fileno(), READ_SIZE)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            if files[key.data] is not None:
                files[key.data].write(chunk)
            tail = tails[key.data]
            tail += chunk
            del tail[: max(0, len(tail) - tail_bytes)]
    code = process.wait()
    for handle in (*files.values(), stdin):
        if handle not in (None, subprocess.DEVNULL):
            handle.close()
    log.update(end_time=now(), exit_code=code if code >= 0 else 128 - code)
    log.update({name: tail.decode("utf-8", "replace") for name, tail in tails.items()})
    return log


def copy_out(source: str, dir_fd: int, name: str, below: str = ".") -> list[tuple[str, int]]:
    """Regular files and directories of `source` (in a task directory) to `name` in the
    open directory `dir_fd` (of the caller's filesystem), nothing through a link;
    (path below the destination, size) of each file."""
    info = os.lstat(source)
    if stat.S_ISLNK(info.st_mode):
        return []
    if stat.S_ISDIR(info.st_mode):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        folder = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        try:
            copied = []
            for entry in sorted(os.scandir(source), key=lambda e: e.name):
                copied += copy_out(entry.path, folder, entry.name, os.path.normpath(os.path.join(below, entry.name)))
            return copied
        finally:
            os.close(folder)
    if not stat.S_ISREG(info.st_mode):
        return []
    reader = open_regular(source, os.O_RDONLY)
    writer = open_regular(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, dir_fd=dir_fd)
    with os.fdopen(reader, "rb") as src, os.fdopen(writer, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return [(below, info.st_size)]


def deliver(item: dict, source: str, relative: str) -> list[dict]:
    """`source` to `relative` below the output's destination; tesOutputFileLogs."""
    if relative.startswith("..") or os.path.isabs(relative):
        raise SystemError_(f"output {item['path']}: {relative} is not below the destination")
    target = os.path.normpath(os.path.join(item["relative"], relative))
    parent, name = os.path.split(target)
    folder = open_beneath(item["fs_root"], parent, create=True)
    try:
        copied = copy_out(source, folder, name)
    finally:
        os.close(folder)
    inside = os.path.join(item.get("path_prefix") or item["path"], relative) if relative != "." else item["path"]
    logged = []
    for below, size in copied:
        path = os.path.normpath(os.path.join(relative, below))
        url = item["url"] if path == "." else item["url"].rstrip("/") + "/" + path
        logged.append({"url": url, "path": os.path.normpath(os.path.join(inside, below)), "size_bytes": str(size)})
    return logged


def stage_outputs(outputs: list[dict]) -> list[dict]:
    """Each output copied to its destination; a tesOutputFileLog per file copied."""
    logged = []
    for item in outputs:
        if item.get("error"):
            raise SystemError_(item["error"])
        if item.get("host_pattern"):
            # Wildcards: every match, at its path below `path_prefix` under the url.
            pairs = [(mirrored(path), os.path.relpath(path, item["host_prefix"])) for path in sorted(glob.glob(item["host_pattern"]))]
        elif os.path.lexists(item["host_path"]):
            pairs = [(mirrored(item["host_path"]), ".")]
        else:
            raise SystemError_(f"output {item['path']} was not made by the task")
        for source, relative in pairs:
            try:
                logged += deliver(item, source, relative)
            except SystemError_ as exc:
                raise SystemError_(f"output {item['path']} to {item['url']}: {exc}") from exc
            except OSError as exc:
                raise SystemError_(f"output {item['path']} to {item['url']}: {exc.strerror or exc}") from exc
    return logged


def main(spec_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    results = Results(spec["results"])
    results.data["planned"] = len(spec["steps"])
    results.save()
    status = 0
    try:
        for _, folder in spec["mirrors"]:
            os.makedirs(folder, exist_ok=True)
        stage_inputs(spec["inputs"])
        for step in spec["steps"]:
            started = time.monotonic()
            log = run_step(step, mirrors=spec["mirrors"], seccomp_fd=spec.get("seccomp_fd"), tail_bytes=spec["tail_bytes"])
            log["elapsed_seconds"] = round(time.monotonic() - started, 3)
            results.data["steps"].append(log)
            results.save()
            if log["exit_code"] != 0 and not step["ignore_error"]:
                status = log["exit_code"] or 1
                break
        if status == 0:
            results.data["outputs"] = stage_outputs(spec["outputs"])
    except SystemError_ as exc:
        results.data["system_error"] = str(exc)
        status = SYSTEM_ERROR_STATUS
        print(f"[task] {exc}", flush=True)
    except OSError as exc:
        results.data["system_error"] = f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")
        status = SYSTEM_ERROR_STATUS
        print(f"[task] {results.data['system_error']}", flush=True)
    results.data["end_time"] = now()
    results.save()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
