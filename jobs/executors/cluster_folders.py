"""A cluster executor's shared folder (Slurm's: `BATCHES_SLURM_DIR`; the fake cluster's):
one folder per submission, seen by the worker and by every node.

    <token>/manifest.json    which job and attempt each task is, and the submission's
                             options; written before it is sent, so a lost answer can
                             be found again
    <token>/<i>.json         task i: argv, environment, log file, timeout (for the job
                             script on the node: Slurm's `slurm_task.py`)
    <token>/slurm_id         the array's id, once the scheduler has answered (the file
                             keeps its first name: folders written before are read alike)
    <token>/status/          what the tasks write on the nodes: the only place a sealed
                             task's account may write (the rest is the worker's)
    <token>/status/<i>.start written on the node when task i begins (node, log offset)
    <token>/status/<i>.exit  written on the node when it ends (code, signal, timed_out, error)
    <token>/status/<i>.out   the scheduler's own output for task i (a job script that could not start)
    <token>/done             every task's end has been reported; removed an hour later

Every file another process reads is written to a temporary name and renamed. What the
worker reads from `status/` is read without following a link and only if it is a plain
file: a task's account could put a link to another file there, or a fifo that would
hold the worker's read forever."""

import contextlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS = "status"  # the tasks' own subfolder
_MAX_STATUS_BYTES = 1 << 16
KEEP_FOLDERS = 3600.0  # seconds a finished submission's folder is kept
_ARRAY_ID_FILE = "slurm_id"  # its first name, kept: folders written before are adopted alike


@dataclass
class Submission:
    """One array submission: the attempts of one batch sent together."""

    token: str
    folder: Path
    options: list[str]
    throttle: int = 0  # at most this many of its tasks run at once (0: no limit)
    array_id: str = ""  # "" until the scheduler answers, or lists it
    lost_since: float | None = None  # the answer to sending it was lost: look it up since then
    not_found: int = 0  # controller answers in a row that did not list it
    tasks: dict[int, "Task"] = field(default_factory=dict)  # open tasks by index

    @property
    def name(self) -> str:
        return f"batches-{self.token}"

    def external_id(self, index: int) -> str:
        return f"{self.array_id}_{index}" if self.array_id else ""

    @classmethod
    def create(cls, *, root: Path, token: str, options: list[str], tasks: list[dict[str, Any]], throttle: int = 0) -> "Submission":
        """The folder with its task files and manifest (`tasks[i]` is task i)."""
        folder = root / token
        folder.mkdir(parents=True)
        (folder / STATUS).mkdir()
        for index, task in enumerate(tasks):
            (folder / f"{index}.json").write_text(json.dumps(task))
        manifest = {"attempts": [[task["job_id"], task["attempt"]] for task in tasks], "options": options, "throttle": throttle}
        write_atomic(folder / "manifest.json", json.dumps(manifest))
        return cls(token=token, folder=folder, options=options, throttle=throttle)

    @classmethod
    def load(cls, *, root: Path, token: str, external_id: str = "") -> "Submission":
        """A submission another worker made; its array id from the folder or from an
        attempt's recorded `external_id`, else unknown (its answer was lost)."""
        folder = root / token
        manifest = read_json(folder / "manifest.json") or {}
        recorded = folder / _ARRAY_ID_FILE
        array_id = recorded.read_text().strip() if recorded.exists() else external_id.split("_")[0]
        throttle = manifest.get("throttle", 0)
        return cls(
            token=token,
            folder=folder,
            options=list(manifest.get("options", [])),
            throttle=throttle if isinstance(throttle, int) and throttle > 0 else 0,
            array_id=array_id,
        )

    def record_array_id(self, array_id: str) -> None:
        self.array_id, self.lost_since, self.not_found = array_id, None, 0
        write_atomic(self.folder / _ARRAY_ID_FILE, array_id)

    def listing(self) -> set[str]:
        """The names in `status/`."""
        try:
            return set(os.listdir(self.folder / STATUS))
        except OSError:
            return set()

    def status(self, index: int, kind: str) -> dict | None:
        """What the node wrote: kind `start` or `exit`; None if nothing (yet). Written
        where a task's account may write: only values of the expected types and sizes
        are taken, and a file that has none is an exit the task could not report."""
        found = read_json(self.folder / STATUS / f"{index}.{kind}", plain_only=True)
        return None if found is None else clean_status(found, kind=kind)

    def has(self, index: int, kind: str) -> bool:
        return os.path.lexists(self.folder / STATUS / f"{index}.{kind}")

    def mark_done(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder / "done").touch()


@dataclass
class Task:
    """One attempt, as task `index` of its submission."""

    job_id: str
    attempt: int
    index: int
    submission: Submission
    timeout: int
    memory_mib: int
    cpu: int
    shown: str = ""  # what was last reported: "", "queued:<reason>", "placed", "running"
    cancel_reason: str = ""
    exit_seen: float | None = None  # an exit file waits for the scheduler's state since then
    cancel_at: float | None = None  # when this worker asked for it to stop

    @property
    def external_id(self) -> str:
        return self.submission.external_id(self.index)

    def status(self, kind: str) -> dict | None:
        return self.submission.status(self.index, kind)


def find_in_manifests(*, root: Path, keys: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, int]]:
    """(job id, attempt) -> (token, index) for each of `keys` that an unfinished
    submission holds."""
    found: dict[tuple[str, int], tuple[str, int]] = {}
    if not keys:
        return found
    for folder in root.iterdir():
        if not folder.is_dir() or (folder / "done").exists():
            continue
        manifest = read_json(folder / "manifest.json")
        for index, (job_id, attempt) in enumerate((manifest or {}).get("attempts", [])):
            if (job_id, attempt) in keys:
                found[(job_id, attempt)] = (folder.name, index)
    return found


def remove_old_folders(*, root: Path) -> None:
    """Folders whose every end was reported more than KEEP_FOLDERS ago."""
    limit = time.time() - KEEP_FOLDERS
    with contextlib.suppress(OSError):
        for folder in root.iterdir():
            with contextlib.suppress(OSError):
                if (folder / "done").stat().st_mtime < limit:
                    shutil.rmtree(folder, ignore_errors=True)


def _int_in(value: object, low: int, high: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else None


def clean_status(found: dict, *, kind: str) -> dict:
    """A start or exit status with only well-formed values (what the job script writes)."""
    if kind == "start":
        node = found.get("node")
        return {
            "node": node[:255] if isinstance(node, str) else "",
            "log_offset": _int_in(found.get("log_offset"), 0, 1 << 62),
            "time": _number_in(found.get("time"), 0, 1e11),
        }
    usage = found.get("usage") if isinstance(found.get("usage"), dict) else {}
    status = {
        "code": _int_in(found.get("code"), 0, 255),
        "signal": _int_in(found.get("signal"), 1, 64),
        "timed_out": found.get("timed_out") is True,
        "log_over": _int_in(found.get("log_over"), 1, 1 << 62),
        "error": found.get("error")[:500] if isinstance(found.get("error"), str) else "",
        "error_kind": found.get("error_kind") if found.get("error_kind") in ("launch", "task") else "",
        "ended_at": _number_in(found.get("ended_at"), 0, 1e11),
        "usage": {name: _number_in(usage.get(name), 0, 1e15) for name in ("max_rss_bytes", "cpu_seconds", "elapsed_seconds")},
    }
    if status["code"] is None and status["signal"] is None and not (status["timed_out"] or status["log_over"] or status["error"]):
        status["error"] = "the task's exit status file could not be read"
    return status


def _number_in(value: object, low: float, high: float) -> float | None:
    """`value` if it is a finite number in [low, high], else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
        return float(value)
    return None


def read_json(path: Path, *, plain_only: bool = False) -> dict | None:
    """The JSON object in `path`, or None. `plain_only`: a file a task's account may
    have put there: never through a link, never a fifo or device, at most 64 KiB."""
    try:
        if not plain_only:
            return json.loads(path.read_text())
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.read(fd, _MAX_STATUS_BYTES)
        finally:
            os.close(fd)
        value = json.loads(data)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
