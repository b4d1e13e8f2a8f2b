"""Sealing local attempts: what this machine offers, and the pieces that use it.

Four parts, each used when the machine has it (`probe()` says which, and why not):
- the job user (`BATCHES_JOB_USER`): jobs run as this unprivileged user, never as the
  worker's (which runs as root to switch to it);
- the sandbox: bubblewrap, with its own PID namespace (every process of the attempt dies
  with it, however it daemonized), its own mount namespace in which only the system's
  programs and libraries (read-only), the attempt's working directory and the batch's
  filesystems (read-only ones read-only) are visible, and a private /tmp: the service's
  data and log folders and other tenants' filesystems do not exist inside;
- cgroup memory and cgroup pids: one limit for all the processes of the attempt
  (cgroup v1, or v2 where the worker's cgroup delegates the controllers).
"""

import contextlib
import errno
import os
import pwd
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The system's programs and libraries, read-only in every sandbox (those that exist).
SYSTEM_PATHS = ("/usr", "/etc", "/opt")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PARTS = ("job_user", "sandbox", "cgroup_memory", "cgroup_pids")


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int


@dataclass
class Isolation:
    """What is in force on this machine, and why each missing part is missing."""

    job_user: JobUser | None = None
    bwrap: str | None = None
    cgroups: "Cgroups | None" = None
    missing: dict[str, str] = field(default_factory=dict)
    network: bool = False  # sandboxed jobs share the machine's network (BATCHES_JOB_NETWORK)

    def in_force(self) -> dict[str, bool]:
        return {part: part not in self.missing for part in PARTS}

    @classmethod
    def none(cls, why: str = "not asked for") -> "Isolation":
        return cls(missing=dict.fromkeys(PARTS, why))

    def describe(self) -> str:
        parts = [f"{part}: {'yes' if ok else 'NO (' + self.missing[part] + ')'}" for part, ok in self.in_force().items()]
        return "; ".join(parts)


def launch(
    isolation: Isolation,
    *,
    argv: list[str],
    workdir: Path,
    filesystems: list[tuple[str, bool]],
    memory_bytes: int,
    max_processes: int,
    name: str,
) -> tuple[list[str], dict[str, Any], "AttemptCgroup | None"]:
    """How to start `argv` sealed with what is in force: the argv to run (inside the
    sandbox), Popen's options (the job user; joining the cgroup before exec) and the
    attempt's cgroup (to watch and remove), or None without cgroups."""
    options: dict[str, Any] = {}
    user = isolation.job_user
    if user is not None:
        options.update(user=user.uid, group=user.gid, extra_groups=[])
        os.chown(workdir, user.uid, user.gid)
    cgroup = None
    if isolation.cgroups is not None:
        cgroup = isolation.cgroups.create(
            name=name, memory_bytes=memory_bytes, max_processes=max_processes, owner=user.uid if user else None
        )
        options["preexec_fn"] = cgroup.join
    if isolation.bwrap is not None:
        program = argv[0]
        visible = [*SYSTEM_PATHS, *SYSTEM_LINKS, *(path for path, _ in filesystems), str(workdir)]
        if not any(program == root or program.startswith(root.rstrip("/") + "/") for root in visible):
            raise FileNotFoundError(errno.ENOENT, "not inside the sandbox (only /usr, /etc, /opt and the batch's filesystems are)", program)
        argv = sandbox_argv(
            bwrap=isolation.bwrap,
            workdir=workdir,
            filesystems=filesystems,
            argv=argv,
            workdir_bytes=memory_bytes,
            network=isolation.network,
        )
    return argv, options, cgroup


def allow_traverse(path: Path) -> None:
    """Let the job user pass through `path` and the folders above it to its attempt's
    working directory (without a sandbox HOME and TMPDIR name it by its full path; in
    one, bubblewrap, running as the job user, may have to make its mount point inside a
    granted filesystem that holds it): add the traverse bit (never read) where it is
    missing. The folders keep their contents unlisted; what the job user may read is
    decided by each file's own mode."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)


def probe(*, job_user: str, network: bool = False) -> Isolation:
    """Look at this machine: the job user, bubblewrap, cgroup controllers."""
    isolation = Isolation(network=network)
    root = os.geteuid() == 0
    if not job_user:
        isolation.missing["job_user"] = "BATCHES_JOB_USER is not set"
    elif not root:
        isolation.missing["job_user"] = "the worker is not root, so it cannot switch to the job user"
    else:
        try:
            entry = pwd.getpwnam(job_user)
        except KeyError:
            isolation.missing["job_user"] = f"no user {job_user!r} on this machine (see the README's set-up)"
        else:
            if entry.pw_uid == 0:
                isolation.missing["job_user"] = f"{job_user!r} is root"
            else:
                isolation.job_user = JobUser(job_user, entry.pw_uid, entry.pw_gid)
    isolation.bwrap = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if isolation.bwrap is None:
        isolation.missing["sandbox"] = "bubblewrap (bwrap) is not installed"
    cgroups, why = Cgroups.find() if root else (None, "the worker is not root")
    isolation.cgroups = cgroups
    if cgroups is None:
        isolation.missing["cgroup_memory"] = isolation.missing["cgroup_pids"] = why
    return isolation


def sandbox_argv(
    *, bwrap: str, workdir: Path, filesystems: list[tuple[str, bool]], argv: list[str], workdir_bytes: int, network: bool = False
) -> list[str]:
    """bwrap's argv around `argv`; `filesystems` lists (path, read_only).

    - The working directory is a tmpfs of `workdir_bytes` at its usual path: in memory,
      so the attempt's memory limit bounds it (a job cannot fill the disk with it, and
      nothing of it is left to delete afterwards).
    - No user namespaces inside: every tenant's job runs as the same user, and the
      kernel counts namespaces per user, so one job creating them could stop every
      other job's sandbox from starting.
    - Without `network` the sandbox has only its own loopback: a job cannot reach the
      service's database or any other service of the machine or its network.
    """
    out = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    if network:
        out.append("--share-net")
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (the sandbox's own, private /tmp)
    for path in SYSTEM_PATHS:
        if os.path.isdir(path):
            out += ["--ro-bind", path, path]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            out += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            out += ["--ro-bind", link, link]
    for path, read_only in sorted(filesystems):
        if os.path.isdir(path):
            out += ["--ro-bind" if read_only else "--bind", path, path]
    out += ["--size", str(workdir_bytes), "--tmpfs", str(workdir), "--chdir", str(workdir), "--", *argv]
    return out


class Cgroups:
    """Where attempt cgroups are made: v1 (a memory and a pids hierarchy) or v2 (one)."""

    def __init__(self, *, version: int, memory: Path, pids: Path) -> None:
        self.version, self.memory, self.pids = version, memory, pids

    @classmethod
    def find(cls) -> "tuple[Cgroups | None, str]":
        own = _own_cgroups()
        if (CGROUP_ROOT / "memory" / "cgroup.procs").exists() and (CGROUP_ROOT / "pids" / "cgroup.procs").exists():
            memory = CGROUP_ROOT / "memory" / own.get("memory", "/").lstrip("/") / "batches"
            pids = CGROUP_ROOT / "pids" / own.get("pids", "/").lstrip("/") / "batches"
            try:
                memory.mkdir(exist_ok=True)
                pids.mkdir(exist_ok=True)
            except OSError as exc:
                return None, f"cannot make cgroups: {exc}"
            return cls(version=1, memory=memory, pids=pids), ""
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            # v2: the attempts' cgroups go below a `batches` cgroup next to the worker's
            # own, which must be delegated the memory and pids controllers.
            base = CGROUP_ROOT / own.get("", "/").lstrip("/")
            batches = base.parent / "batches" if base != CGROUP_ROOT else base / "batches"
            try:
                batches.mkdir(exist_ok=True)
                (batches / "cgroup.subtree_control").write_text("+memory +pids")
            except OSError as exc:
                return None, f"cannot delegate the memory and pids controllers in {batches}: {exc}"
            return cls(version=2, memory=batches, pids=batches), ""
        return None, "no memory and pids cgroup controllers are mounted"

    def remove_stale(self, *, older_than: float = 60.0) -> int:
        """Remove attempt cgroups left empty by workers that died before removing them
        (old enough that no worker is still about to start a process in them)."""
        removed = 0
        cutoff = time.time() - older_than
        for base in dict.fromkeys([self.memory, self.pids]):
            for path in base.iterdir() if base.is_dir() else []:
                with contextlib.suppress(OSError):
                    if path.is_dir() and path.stat().st_mtime < cutoff and not (path / "cgroup.procs").read_text().strip():
                        path.rmdir()
                        removed += 1
        return removed

    def create(self, *, name: str, memory_bytes: int, max_processes: int, owner: int | None) -> "AttemptCgroup":
        """A cgroup for one attempt with its limits; `owner` (the job user) may move
        its own process into it (and nowhere else)."""
        dirs = list(dict.fromkeys([self.memory / name, self.pids / name]))
        for path in dirs:
            with contextlib.suppress(FileExistsError):
                path.mkdir()
        group = AttemptCgroup(version=self.version, memory=self.memory / name, pids=self.pids / name)
        if self.version == 1:
            (group.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                (group.memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            (group.pids / "pids.max").write_text(str(max_processes))
        else:
            (group.memory / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (group.memory / "memory.swap.max").write_text("0")
            (group.pids / "pids.max").write_text(str(max_processes))
        if owner is not None:
            for procs in group.procs_files:
                os.chown(procs, owner, -1)
        return group


@dataclass(frozen=True)
class AttemptCgroup:
    version: int
    memory: Path
    pids: Path

    @property
    def procs_files(self) -> list[str]:
        return list(dict.fromkeys([str(self.memory / "cgroup.procs"), str(self.pids / "cgroup.procs")]))

    def join(self) -> None:
        """Move the calling process into the cgroup (run in the child before exec)."""
        pid = str(os.getpid()).encode()
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids_in(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(line) for line in Path(self.pids / "cgroup.procs").read_text().split()]
        return []

    def signal_all(self, sig: int) -> None:
        for pid in self.pids_in():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

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
        for path in dict.fromkeys([self.memory, self.pids]):
            with contextlib.suppress(FileNotFoundError):
                try:
                    path.rmdir()
                except OSError:
                    return False
        return True


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ("" for v2's unified hierarchy)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                out[controller] = path
    return out
