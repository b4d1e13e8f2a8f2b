"""Cgroups for local attempts: one per attempt, with its memory, process and core
limits, its cpu time, and whether the kernel killed one of its processes for memory.
cgroup v1 (a hierarchy per controller) or v2 (one tree)."""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Cgroups:
    """Where attempt cgroups are made: v1 (a hierarchy per controller) or v2 (one).
    `cpuset` is None where cores cannot be enforced (`cpuset_missing` says why); cpu
    time is read from `cpuacct` (v1) or the v2 cgroup itself."""

    def __init__(
        self,
        *,
        version: int,
        memory: Path,
        pids: Path,
        cpuset: Path | None = None,
        cpuacct: Path | None = None,
        cpuset_missing: str = "",
    ) -> None:
        self.version, self.memory, self.pids = version, memory, pids
        self.cpuset, self.cpuacct, self.cpuset_missing = cpuset, cpuacct, cpuset_missing

    @property
    def bases(self) -> list[Path]:
        return list(dict.fromkeys(path for path in (self.memory, self.pids, self.cpuset, self.cpuacct) if path is not None))

    @classmethod
    def find(cls) -> "tuple[Cgroups | None, str]":
        own = _own_cgroups()
        if (CGROUP_ROOT / "memory" / "cgroup.procs").exists() and (CGROUP_ROOT / "pids" / "cgroup.procs").exists():
            return cls._find_v1(own)
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return cls._find_v2(own)
        return None, "no memory and pids cgroup controllers are mounted"

    @classmethod
    def _find_v1(cls, own: dict[str, str]) -> "tuple[Cgroups | None, str]":
        def base(controller: str) -> Path:
            return CGROUP_ROOT / controller / own.get(controller, "/").lstrip("/") / "batches"

        memory, pids = base("memory"), base("pids")
        try:
            memory.mkdir(exist_ok=True)
            pids.mkdir(exist_ok=True)
        except OSError as exc:
            return None, f"cannot make cgroups: {exc}"
        cpuacct = None
        if (CGROUP_ROOT / "cpuacct" / "cgroup.procs").exists():
            with contextlib.suppress(OSError):
                base("cpuacct").mkdir(exist_ok=True)
                cpuacct = base("cpuacct")
        cpuset, why = None, "no cpuset cgroup controller is mounted"
        if (CGROUP_ROOT / "cpuset" / "cgroup.procs").exists():
            try:
                cpuset = base("cpuset")
                cpuset.mkdir(exist_ok=True)
                # A v1 cpuset takes no process until its cpus and mems are set: the
                # parent's, which the attempts' cgroups then narrow.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if not (cpuset / name).read_text().strip():
                        (cpuset / name).write_text((cpuset.parent / name).read_text().strip())
                why = ""
            except OSError as exc:
                cpuset, why = None, f"cannot make cpuset cgroups: {exc}"
        return cls(version=1, memory=memory, pids=pids, cpuset=cpuset, cpuacct=cpuacct, cpuset_missing=why), ""

    @classmethod
    def _find_v2(cls, own: dict[str, str]) -> "tuple[Cgroups | None, str]":
        # The attempts' cgroups go below a `batches` cgroup next to the worker's own,
        # which must be delegated the memory and pids controllers (and cpuset for cores).
        base = CGROUP_ROOT / own.get("", "/").lstrip("/")
        batches = base.parent / "batches" if base != CGROUP_ROOT else base / "batches"
        try:
            batches.mkdir(exist_ok=True)
            (batches / "cgroup.subtree_control").write_text("+memory +pids")
        except OSError as exc:
            return None, f"cannot delegate the memory and pids controllers in {batches}: {exc}"
        cpuset, why = batches, ""
        try:
            (batches / "cgroup.subtree_control").write_text("+cpuset")
        except OSError as exc:
            cpuset, why = None, f"cannot delegate the cpuset controller in {batches}: {exc}"
        return cls(version=2, memory=batches, pids=batches, cpuset=cpuset, cpuacct=batches, cpuset_missing=why), ""

    def remove_stale(self, *, older_than: float = 60.0) -> int:
        """Remove attempt cgroups left empty by workers that died before removing them
        (old enough that no worker is still about to start a process in them)."""
        removed = 0
        cutoff = time.time() - older_than
        for base in self.bases:
            for path in base.iterdir() if base.is_dir() else []:
                with contextlib.suppress(OSError):
                    if path.is_dir() and path.stat().st_mtime < cutoff and not (path / "cgroup.procs").read_text().strip():
                        path.rmdir()
                        removed += 1
        return removed

    def create(self, *, name: str, memory_bytes: int, max_processes: int, cores: Iterable[int], owner: int | None) -> "AttemptCgroup":
        """A cgroup for one attempt with its limits, on `cores` only; `owner` (the job's
        account) may move its own process into it (and nowhere else)."""
        group = AttemptCgroup(
            version=self.version,
            memory=self.memory / name,
            pids=self.pids / name,
            cpuset=self.cpuset / name if self.cpuset is not None else None,
            cpuacct=self.cpuacct / name if self.cpuacct is not None else None,
        )
        for path in group.dirs:
            with contextlib.suppress(FileExistsError):
                path.mkdir()
        if self.version == 1:
            (group.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                (group.memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        else:
            (group.memory / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (group.memory / "memory.swap.max").write_text("0")
        (group.pids / "pids.max").write_text(str(max_processes))
        if group.cpuset is not None:
            (group.cpuset / "cpuset.cpus").write_text(",".join(str(core) for core in sorted(cores)))
            if self.version == 1:
                (group.cpuset / "cpuset.mems").write_text((self.cpuset / "cpuset.mems").read_text().strip())
        if owner is not None:
            for procs in group.procs_files:
                os.chown(procs, owner, -1)
        return group


@dataclass(frozen=True)
class AttemptCgroup:
    version: int
    memory: Path
    pids: Path
    cpuset: Path | None = None
    cpuacct: Path | None = None

    @property
    def dirs(self) -> list[Path]:
        return list(dict.fromkeys(path for path in (self.memory, self.pids, self.cpuset, self.cpuacct) if path is not None))

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs]

    def cgexec_args(self) -> list[str]:
        """cgexec's options that put a process in this cgroup (v1: `-g controller:path`
        for each hierarchy)."""
        args: list[str] = []
        for path in self.dirs:
            relative = path.relative_to(CGROUP_ROOT)
            args += ["-g", f"{relative.parts[0]}:{'/'.join(relative.parts[1:])}"]
        return args

    def join(self) -> None:
        """Move the calling process into the cgroup (run in the child before exec)."""
        pid = str(os.getpid()).encode()
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def entered_by_this_thread(self) -> Iterator[None]:
        """cgroup v1: the calling thread alone moves into the cgroup for the duration, so
        a process it starts begins there, and moves back after. Starting an attempt this
        way needs no code in the child before exec (a preexec_fn would force a full
        fork() of the worker: about 6 ms for a 100 MB worker against 0.1 ms for vfork)."""
        tid = str(threading.get_native_id()).encode()
        entered: list[Path] = []
        try:
            for path in self.dirs:
                _write(path / "tasks", tid)
                entered.append(path)
            yield
        finally:
            for path in entered:  # back to the worker's own cgroup (two levels up)
                _write(path.parent.parent / "tasks", tid)

    def pids_in(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(line) for line in Path(self.pids / "cgroup.procs").read_text().split()]
        return []

    def signal_all(self, sig: int, *, but: int = 0) -> None:
        for pid in self.pids_in():
            if pid != but:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def cpu_seconds(self) -> float | None:
        """The cpu time (user and system) all its processes have used so far."""
        if self.cpuacct is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            if self.version == 1:
                return int((self.cpuacct / "cpuacct.usage").read_text()) / 1e9
            for line in (self.cpuacct / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        return None

    def memory_peak_bytes(self) -> int | None:
        """The most memory its processes held at once (v2 `memory.peak`, from kernel
        5.19; v1 `memory.max_usage_in_bytes`): what counts against its limit."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        with contextlib.suppress(OSError, ValueError):
            return int((self.memory / name).read_text())
        return None

    def out_of_memory(self) -> bool:
        """The kernel killed a process of the attempt for going over the limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError):
            for line in (self.memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def remove(self) -> bool:
        """Kill what is left and remove the cgroup; False while processes remain."""
        if self.pids_in():
            self.signal_all(signal.SIGKILL)
            return False
        for path in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                try:
                    path.rmdir()
                except OSError:
                    return False
        return True


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ("" for v2's unified hierarchy)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                out[controller] = path
    return out
