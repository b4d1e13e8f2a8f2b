"""A TES task document checked and turned into a task (`jobs.tasks`): every error names
its field as TES does (`executors[0].command`, `inputs[1].url`, `resources.ram_gb`).

What is refused at creation (400): what the spec forbids or no run could mend (a
missing command, a relative path, an image no catalog pattern matches, resources past
the site's limits, a wildcard output without `path_prefix`, unsupported backend
parameters with `backend_parameters_strict`). What cannot be staged (an `s3://` input, a
`file://` outside the caller's filesystems, an http(s) host the operator has not
allowed) is accepted and fails the task as SYSTEM_ERROR with the reason in its
`system_logs`, as the TES compliance suite expects of a service without that storage.
"""

import math
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from batches.images import UnknownImage, resolve_images
from batches.models import Filesystem
from batches.selectors import granted_filesystems

MAX_EXECUTORS = 50
MAX_ITEMS = 1000  # inputs, outputs, volumes each
MAX_CONTENT = 1 << 20  # bytes of an input's `content` (the spec asks at least 128 KiB)
HIDDEN_PATHS = ("/proc", "/dev")  # the sandbox makes its own
WILDCARDS = set("*?[")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GIB = 1024  # MiB: TES's "GB" is taken as GiB (what a job's memory limit counts in)


@dataclass
class CheckedTask:
    """A document ready to submit: the task, its hardware, what it names."""

    task: dict[str, Any]
    cpu: int
    memory_mib: int
    filesystems: list[Filesystem]
    document: dict[str, Any]  # as stored: the server's fields and unsupported keys left out
    warnings: list[str] = field(default_factory=list)


class _Errors(dict):
    def add(self, where: str, message: str) -> None:
        self.setdefault(where, []).append(message)


def check_document(*, user: AbstractBaseUser, document: dict[str, Any]) -> CheckedTask:
    """The task of `document` (a TES tesTask body) for `user`, or ValidationError naming
    each field that is wrong (see the module)."""
    errors = _Errors()
    if not isinstance(document, dict):
        raise ValidationError({"body": ["must be a JSON object (a tesTask)"]})
    stored = {k: v for k, v in document.items() if k not in ("id", "state", "logs", "creation_time")}
    for key in ("name", "description"):
        if key in stored and not isinstance(stored[key], str):
            errors.add(key, "must be a string")
    if len(stored.get("name") or "") > 1000:
        errors.add("name", "must be at most 1000 characters")
    _check_mapping(stored.get("tags", {}), "tags", errors)
    roots = _filesystems(user)
    steps = _executors(stored.get("executors"), errors)
    volumes = _volumes(stored.get("volumes", []), errors)
    inputs, used_in = _inputs(stored.get("inputs", []), roots, errors)
    outputs, used_out = _outputs(stored.get("outputs", []), roots, errors)
    cpu, memory, warnings = _resources(stored, errors)
    if errors:
        raise ValidationError(dict(errors))
    task = {"steps": steps, "inputs": inputs, "outputs": outputs, "volumes": volumes}
    used = {fs.pk: fs for fs in [*used_in, *used_out]}
    return CheckedTask(task=task, cpu=cpu, memory_mib=memory, filesystems=list(used.values()), document=stored, warnings=warnings)


def _check_mapping(value: Any, where: str, errors: _Errors) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        errors.add(where, "must be an object of strings")


def _path(value: Any, where: str, errors: _Errors, *, directory: bool = False) -> str | None:
    """An absolute, normal container path (not / itself, nothing under /proc or /dev)."""
    if not isinstance(value, str) or not value.startswith("/"):
        errors.add(where, "must be an absolute path inside the container, e.g. /data/file1")
        return None
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = normal[1:]
    if "\0" in value or ".." in value.split("/"):
        errors.add(where, "must not contain .. or NUL")
        return None
    if normal == "/" or (not directory and posixpath.dirname(normal) == "/"):
        errors.add(where, "must be inside a directory other than /, e.g. /data/file1 (the task's directories are made for it)")
        return None
    if any(normal == hidden or normal.startswith(hidden + "/") for hidden in HIDDEN_PATHS):
        errors.add(where, f"must not be under {' or '.join(HIDDEN_PATHS)} (the sandbox makes its own)")
        return None
    return normal


def _executors(value: Any, errors: _Errors) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        errors.add("executors", "must list at least one executor")
        return []
    if len(value) > MAX_EXECUTORS:
        errors.add("executors", f"must list at most {MAX_EXECUTORS} executors, not {len(value)}")
        return []
    roots = resolve_images(sorted({e["image"] for e in value if isinstance(e, dict) and isinstance(e.get("image"), str)}))
    steps = []
    for index, executor in enumerate(value):
        where = f"executors[{index}]"
        if not isinstance(executor, dict):
            errors.add(where, "must be an object (a tesExecutor)")
            continue
        command = executor.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) or not command[0]:
            errors.add(f"{where}.command", "must be a non-empty list of strings (an argv: no shell runs it)")
        elif any("\0" in a for a in command):
            errors.add(f"{where}.command", "must not contain NUL characters")
        root = roots.get(executor.get("image")) if isinstance(executor.get("image"), str) else None
        if not isinstance(executor.get("image"), str) or not executor.get("image"):
            errors.add(f"{where}.image", "is required: the name of a container image the operator offers")
        elif isinstance(root, UnknownImage):
            errors.add(f"{where}.image", str(root))
        step: dict[str, Any] = {"command": command, "root": None if isinstance(root, UnknownImage) else root}
        if executor.get("workdir") is not None:
            step["workdir"] = _path(executor["workdir"], f"{where}.workdir", errors, directory=True)
        for name in ("stdin", "stdout", "stderr"):
            if executor.get(name) is not None:
                step[name] = _path(executor[name], f"{where}.{name}", errors)
        env = executor.get("env", {})
        _check_mapping(env, f"{where}.env", errors)
        if isinstance(env, dict) and any(not ENV_NAME.fullmatch(str(k)) or "\0" in str(v) for k, v in env.items()):
            errors.add(f"{where}.env", "names are letters, digits and _ (not starting with a digit); values hold no NUL")
        step["env"] = env if isinstance(env, dict) else {}
        if not isinstance(executor.get("ignore_error", False), bool):
            errors.add(f"{where}.ignore_error", "must be true or false")
        step["ignore_error"] = executor.get("ignore_error") is True
        steps.append(step)
    return steps


def _volumes(value: Any, errors: _Errors) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        errors.add("volumes", f"must be a list of at most {MAX_ITEMS} directories")
        return []
    return [p for index, v in enumerate(value) if (p := _path(v, f"volumes[{index}]", errors, directory=True))]


def _filesystems(user: AbstractBaseUser) -> list[tuple[Filesystem, str]]:
    """The caller's filesystems with their real paths, longest first."""
    found = [(fs, os.path.realpath(fs.path)) for fs in granted_filesystems(user=user)]
    return sorted(found, key=lambda pair: -len(pair[1]))


def _local_path(url: str) -> str | None:
    """The host path of a `file://` URL (or a bare absolute path), else None. ValueError
    for one with a NUL, or a `.` or `..` part (a path names its place plainly)."""
    if url.startswith("/"):
        path = url
    else:
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            return None
        path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError("a file URL names an absolute path, e.g. file:///data/x")
    if "\0" in path or any(part in (".", "..") for part in path.split("/")):
        raise ValueError("must not hold a NUL, or . or .. as a part of its path")
    return path


def _inside(path: str, roots: list[tuple[Filesystem, str]], *, writable: bool) -> tuple[Filesystem, str, str] | None:
    """(the filesystem of the caller's that holds `path`, its real root, the path's real
    place relative to that root), links resolved as they are now; the runner walks that
    relative path again without following any link (`task_runner.open_beneath`)."""
    real = os.path.realpath(path)
    for fs, root in roots:
        if (real == root or real.startswith(root.rstrip("/") + "/")) and not (writable and fs.read_only):
            return fs, root, os.path.relpath(real, root)
    return None


def _unstaged(url: str, verb: str) -> str:
    hosts = ", ".join(settings.BATCHES_TES_INPUT_HOSTS) or "none allowed by the operator"
    offered = "file:// inside your filesystems" + (f", http(s) from {hosts}" if verb == "fetched" else "")
    return f"{url} cannot be {verb}: this service offers {offered}"


def _local_url(url: str, where: str, errors: _Errors) -> str | None:
    try:
        return _local_path(url)
    except ValueError as exc:
        errors.add(where, str(exc))
        return None


def _files(value: Any, field: str, shape: str, errors: _Errors) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, item, FILE or DIRECTORY) of each well-formed item of the `field` list."""
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        errors.add(field, f"must be a list of at most {MAX_ITEMS} {field}")
        return
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            errors.add(where, f"must be an object (a {shape})")
            continue
        kind = item.get("type", "FILE")
        if kind not in ("FILE", "DIRECTORY"):
            errors.add(f"{where}.type", "must be FILE or DIRECTORY")
        yield where, item, kind


def _inputs(value: Any, roots: list[tuple[Filesystem, str]], errors: _Errors) -> tuple[list[dict[str, Any]], list[Filesystem]]:
    staged, used, seen = [], [], set()
    for where, item, kind in _files(value, "inputs", "tesInput", errors):
        path = _path(item.get("path"), f"{where}.path", errors, directory=kind == "DIRECTORY")
        if path is not None and path in seen:
            errors.add(f"{where}.path", f"{path} is the path of an earlier input")
        seen.add(path)
        content, url = item.get("content"), item.get("url")
        planned: dict[str, Any] = {"path": path, "type": kind, "url": url}
        if content not in (None, ""):
            if not isinstance(content, str) or len(content.encode("utf-8", "replace")) > MAX_CONTENT:
                errors.add(f"{where}.content", f"must be a string of at most {MAX_CONTENT} bytes")
            planned["content"] = content
        elif not isinstance(url, str) or not url:
            errors.add(f"{where}.url", "is required unless content is given")
        elif (local := _local_url(url, f"{where}.url", errors)) is not None:
            found = _inside(local, roots, writable=False)
            if found is None or not os.path.lexists(local) or found[2] == ".":
                planned["error"] = f"input {url}: no such file in your filesystems"
            else:
                fs, planned["fs_root"], planned["relative"] = found
                used.append(fs)
        elif urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname in settings.BATCHES_TES_INPUT_HOSTS:
            planned["fetch"] = url
        else:
            planned["error"] = f"input {_unstaged(url, 'fetched')}"
        staged.append(planned)
    return staged, used


def _outputs(value: Any, roots: list[tuple[Filesystem, str]], errors: _Errors) -> tuple[list[dict[str, Any]], list[Filesystem]]:
    staged, used = [], []
    for where, item, kind in _files(value, "outputs", "tesOutput", errors):
        raw = item.get("path")
        pattern = isinstance(raw, str) and bool(WILDCARDS & set(raw))
        path = _path(raw, f"{where}.path", errors, directory=kind == "DIRECTORY" or pattern)
        url = item.get("url")
        planned: dict[str, Any] = {"path": path, "type": kind, "url": url}
        if pattern and path:
            raw_prefix = item.get("path_prefix")
            fixed = path.split("/")
            cut = next(n for n, part in enumerate(fixed) if WILDCARDS & set(part))
            planned["pattern_root"] = root = "/".join(fixed[:cut]) or "/"
            prefix = _path(raw_prefix, f"{where}.path_prefix", errors, directory=True) if isinstance(raw_prefix, str) else None
            if root == "/":
                errors.add(f"{where}.path", "wildcards must be below a directory other than /")
            elif prefix is None or WILDCARDS & set(prefix) or not (root == prefix or root.startswith(prefix + "/")):
                errors.add(
                    f"{where}.path_prefix",
                    "is required with wildcards in path: a directory, without wildcards, that holds every match (the start of path)",
                )
            else:
                planned["path_prefix"] = prefix
        if not isinstance(url, str) or not url:
            errors.add(f"{where}.url", "is required: where the output is delivered")
        elif (local := _local_url(url, f"{where}.url", errors)) is not None:
            parent, name = os.path.split(local.rstrip("/"))
            found = _inside(parent or "/", roots, writable=True)
            if found is None or not name:
                planned["error"] = f"output {url}: not inside a writable filesystem of yours"
            else:
                fs, planned["fs_root"], below = found
                planned["relative"] = os.path.normpath(os.path.join(below, name))
                used.append(fs)
        else:
            planned["error"] = f"output {_unstaged(url, 'delivered')}"
        staged.append(planned)
    return staged, used


def _resources(stored: dict[str, Any], errors: _Errors) -> tuple[int, int, list[str]]:
    """(cores, MiB, warnings), within the site's limits, and the stored resources
    without the backend parameters this service does not support (none yet)."""
    resources = stored.get("resources") or {}
    if not isinstance(resources, dict):
        errors.add("resources", "must be an object (tesResources)")
        return 1, settings.BATCHES_TES_DEFAULT_MEMORY_MIB, []
    cpu = resources.get("cpu_cores") or 1
    if not isinstance(cpu, int) or isinstance(cpu, bool) or not 1 <= cpu <= settings.BATCHES_MAX_CPU:
        errors.add("resources.cpu_cores", f"must be a whole number between 1 and {settings.BATCHES_MAX_CPU} (this site's limit)")
        cpu = 1
    ram = resources.get("ram_gb")
    memory = settings.BATCHES_TES_DEFAULT_MEMORY_MIB
    if ram is not None:
        if (
            not isinstance(ram, int | float)
            or isinstance(ram, bool)
            or not ram > 0
            or math.ceil(ram * GIB) > settings.BATCHES_MAX_MEMORY_MIB
        ):
            errors.add(
                "resources.ram_gb", f"must be above 0 and at most {settings.BATCHES_MAX_MEMORY_MIB / GIB:g} (GiB; this site's limit)"
            )
        else:
            memory = max(1, math.ceil(ram * GIB))
    disk = resources.get("disk_gb")
    if disk is not None and (not isinstance(disk, int | float) or isinstance(disk, bool) or disk < 0):
        errors.add("resources.disk_gb", "must be a number of at least 0")
    parameters = resources.get("backend_parameters") or {}
    warnings = []
    if parameters:
        _check_mapping(parameters, "resources.backend_parameters", errors)
        names = ", ".join(sorted(map(str, parameters)))
        if resources.get("backend_parameters_strict") is True:
            errors.add("resources.backend_parameters", f"not supported here: {names} (service-info lists the supported keys: none)")
        else:
            warnings.append(f"backend parameters not supported here, ignored: {names}")
            stored["resources"] = {k: v for k, v in resources.items() if k != "backend_parameters"}
    return cpu, memory, warnings
