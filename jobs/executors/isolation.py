"""Sealing local attempts: what this machine offers, and the pieces that use it.

Five parts, each used when the machine has it (`probe()` says which, and why not):
- job accounts: the worker runs as root and starts each attempt as its tenant's own
  unix account (`accounts.JobAccount`: mapped by an operator or taken from a pool), or,
  on a deployment without accounts, as the one shared `BATCHES_JOB_USER`; never as root
  or as the worker's user. Files a job makes are private to its account (umask 077);
- the sandbox: bubblewrap, with its own PID namespace (every process of the attempt dies
  with it, however it daemonized), its own mount namespace in which only the system's
  programs and libraries (read-only), the few files of /etc a program needs, the
  attempt's working directory and the batch's filesystems (read-only ones read-only) are
  visible, and a private /tmp: the service's data and log folders, the rest of /etc and
  other tenants' filesystems do not exist inside;
- cgroup memory, cgroup pids and cgroup cpu: one memory limit and one process limit for
  all the processes of the attempt, and the cores it was given as a cpuset it cannot
  widen by changing its affinity (cgroup v1, or v2 where the worker's cgroup delegates
  the controllers). Its cpu time is read from the same cgroup.
"""

import errno
import os
import pwd
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.executors import seccomp
from jobs.executors.cgroups import AttemptCgroup, Cgroups

# The system's programs and libraries, read-only in every sandbox (those that exist).
SYSTEM_PATHS = ("/usr", "/opt")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What a program needs of /etc (names of users and groups, name resolution, TLS
# certificates, the dynamic linker's cache, the alternatives' links, time zone and
# locale, Python's own), and nothing else: a file an operator leaves readable in /etc
# (the service's env file, Slurm's or RabbitMQ's configuration) is not there.
ETC_NEEDED = (
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "networks",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "locale.alias",
    "mime.types",
    "os-release",
    "debian_version",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
)
PARTS = ("job_user", "sandbox", "cgroup_memory", "cgroup_pids", "cgroup_cpu")
# The kernel's protections for world-writable sticky folders (a shared scratch), which
# tenants' own accounts need: without them a tenant who makes a name first (a file open
# to all, a symlink, a fifo) reads, redirects or blocks what another writes under it.
SHARED_FOLDER_SYSCTLS = {"protected_symlinks": 1, "protected_regular": 2, "protected_fifos": 2}
JOB_UMASK = 0o077  # what a job makes is its tenant's alone unless the job says otherwise
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")  # util-linux
SECCOMP = seccomp.program()  # None on an architecture without a filter here
CGEXEC = shutil.which("cgexec", path="/usr/bin:/bin:/usr/sbin:/sbin")  # cgroup-tools


def join_mode(cgroup: AttemptCgroup) -> str:
    """How a new attempt's first process enters its cgroup before its program runs,
    without a preexec_fn where possible (one forces a full fork() of the worker, about
    6 ms for a 100 MB worker against 0.1 ms for a vfork):
    - `exec` (cgroup v1 with cgroup-tools' cgexec): the child execs cgexec, which
      joins and execs the rest: the cost is the child's, off the worker's path;
    - `thread` (cgroup v1): the spawning thread enters the cgroup for the spawn
      (AttemptCgroup.entered_by_this_thread);
    - `preexec` (cgroup v2): the child joins before exec."""
    if cgroup.version != 1:
        return "preexec"
    return "exec" if CGEXEC else "thread"


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int


class NoJobAccount(LookupError):
    """The attempt has no account it may run under (the reason says what to do)."""


@dataclass
class Isolation:
    """What is in force on this machine, and why each missing part is missing.

    `job_user` is the shared account of a deployment without per-tenant accounts
    (BATCHES_JOB_USER), or None; `switch_users`: the worker may start attempts as other
    accounts (it is root). `off`: the operator turned isolation off, so attempts run as
    the worker's own user, whatever it is."""

    job_user: JobUser | None = None
    switch_users: bool = False
    bwrap: str | None = None
    cgroups: Cgroups | None = None
    missing: dict[str, str] = field(default_factory=dict)
    network: bool = False  # sandboxed jobs share the machine's network (BATCHES_JOB_NETWORK)
    off: bool = False

    def in_force(self) -> dict[str, bool]:
        return {part: part not in self.missing for part in PARTS}

    @classmethod
    def none(cls, why: str = "not asked for") -> "Isolation":
        return cls(missing=dict.fromkeys(PARTS, why), off=True)

    def describe(self) -> str:
        parts = [f"{part}: {'yes' if ok else 'NO (' + self.missing[part] + ')'}" for part, ok in self.in_force().items()]
        return "; ".join(parts)

    def root_problem(self, *, accounts_exist: bool, verb: str = "run") -> str:
        """Why a worker with this isolation would run jobs as root ("" if it would not):
        it never does unless the operator turned isolation off."""
        if self.off or not self.switch_users or self.job_user is not None or accounts_exist:
            return ""
        return (
            f"refusing to {verb} jobs as root: create job accounts (python manage.py job_accounts --pool N, or map users "
            f"to their accounts), or set BATCHES_JOB_USER to a shared unprivileged account; BATCHES_ISOLATION=off {verb}s "
            "them as root anyway (development only)"
        )

    def account_for(self, run_as: str, uid: int | None = None) -> JobUser | None:
        """The account an attempt of a tenant mapped to `run_as` ("" without one) runs
        under: its own, else the shared job user; None runs it as the worker's user,
        which is allowed only when isolation is off or the worker is not root."""
        if run_as and self.switch_users:
            return job_account(run_as, uid=uid)
        if self.job_user is not None:
            return self.job_user
        if self.switch_users and not self.off:
            raise NoJobAccount(
                "no job account to run it under: map its owner to a unix account, or create a pool (python manage.py job_accounts --pool N)"
            )
        return None


def job_account(name: str, *, uid: int | None = None) -> JobUser:
    """The unix account `name` on this machine; never root, and with the uid it was
    mapped with (`uid`, when known): a name that means another uid here would run the
    job as someone else (the service, another tenant)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise NoJobAccount(f"job account {name!r} does not exist on this machine") from None
    if entry.pw_uid == 0:
        raise NoJobAccount(f"job account {name!r} is root")
    if uid is not None and entry.pw_uid != uid:
        raise NoJobAccount(
            f"job account {name!r} has uid {entry.pw_uid} on this machine, not {uid} as recorded: the accounts must match everywhere"
        )
    return JobUser(name, entry.pw_uid, entry.pw_gid)


def launch(
    isolation: Isolation,
    *,
    argv: list[str],
    workdir: Path,
    filesystems: list[tuple[str, bool]],
    memory_bytes: int,
    max_processes: int,
    cores: list[int],
    name: str,
    user: JobUser | None,
    sandbox: bool = True,
) -> tuple[list[str], dict[str, Any], AttemptCgroup | None]:
    """How to start `argv` sealed with what is in force, as `user` (None: the worker's
    own): the argv to run (through setpriv, which switches to the account, into the
    sandbox), Popen's options (the umask; the seccomp filter's file, in `pass_fds`, for
    the caller to close once started; on cgroup v2, joining the cgroup before exec)
    and the attempt's cgroup (to watch and remove; on cgroup v1 the caller starts the
    process from inside it), or None without cgroups. Without `sandbox`, `argv` is not
    put in a sandbox (a task's runner, which puts each step in one of its own with the
    seccomp file it is handed)."""
    if isolation.bwrap is not None and sandbox:
        ensure_visible(argv[0], filesystems=filesystems, also=[str(workdir)])
    options: dict[str, Any] = {"umask": JOB_UMASK}
    cgroup = None
    if isolation.cgroups is not None:
        cgroup = isolation.cgroups.create(
            name=name, memory_bytes=memory_bytes, max_processes=max_processes, cores=cores, owner=user.uid if user else None
        )
    try:
        if cgroup is not None and join_mode(cgroup) == "preexec":
            options["preexec_fn"] = cgroup.join
        if isolation.bwrap is not None:
            seccomp_fd = None
            if SECCOMP is not None:
                # A file of its own for each spawn: bubblewrap reads it to its end.
                seccomp_fd = os.memfd_create("batches-seccomp", 0)
                options["pass_fds"] = (seccomp_fd,)
                os.write(seccomp_fd, SECCOMP)
                os.lseek(seccomp_fd, 0, os.SEEK_SET)
        if isolation.bwrap is not None and sandbox:
            argv = sandbox_argv(
                bwrap=isolation.bwrap,
                workdir=workdir,
                filesystems=filesystems,
                argv=argv,
                workdir_bytes=memory_bytes,
                network=isolation.network,
                seccomp_fd=seccomp_fd,
            )
        if user is not None:
            os.chown(workdir, user.uid, user.gid)
            if SETPRIV:
                # Switched by an exec in the child: Popen's own user= would force a full
                # fork() of the worker instead of a vfork().
                argv = [SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--", *argv]
            else:
                options.update(user=user.uid, group=user.gid, extra_groups=[])
        if cgroup is not None and join_mode(cgroup) == "exec":
            argv = [CGEXEC, *cgroup.cgexec_args(), "--", *argv]  # outermost: it joins as root, then execs the rest
    except BaseException:
        release_launch(options, cgroup)
        raise
    return argv, options, cgroup


def release_launch(options: dict[str, Any], cgroup: AttemptCgroup | None) -> None:
    """Undo what `launch` made, for an attempt that did not start."""
    for fd in options.get("pass_fds", ()):
        os.close(fd)
    if cgroup is not None:
        cgroup.remove()


def ensure_visible(program: str, *, filesystems: list[tuple[str, bool]], also: list[str] | None = None) -> None:
    """FileNotFoundError unless `program` lies where the sandbox shows it."""
    visible = [*SYSTEM_PATHS, *SYSTEM_LINKS, *(path for path, _ in filesystems), *(also or [])]
    if not any(program == root or program.startswith(root.rstrip("/") + "/") for root in visible):
        raise FileNotFoundError(errno.ENOENT, "not inside the sandbox (only /usr, /opt and the batch's filesystems are)", program)


def allow_traverse(path: Path) -> None:
    """Let the job accounts pass through `path` and the folders above it to an attempt's
    working directory (without a sandbox HOME and TMPDIR name it by its full path; in
    one, bubblewrap, running as the job's account, may have to make its mount point
    inside a granted filesystem that holds it): add the traverse bit (never read) where
    it is missing. The folders keep their contents unlisted; what an account may read is
    decided by each file's own mode."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)


def probe(*, job_user: str, network: bool = False) -> Isolation:
    """Look at this machine: switching accounts, the shared job user, bubblewrap,
    cgroup controllers."""
    isolation = Isolation(network=network)
    root = os.geteuid() == 0
    probe_job_user(isolation, job_user=job_user, how="start jobs as their tenants' accounts")
    isolation.bwrap = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if isolation.bwrap is None:
        isolation.missing["sandbox"] = "bubblewrap (bwrap) is not installed"
    cgroups, why = Cgroups.find() if root else (None, "the worker is not root")
    isolation.cgroups = cgroups
    if cgroups is None:
        isolation.missing["cgroup_memory"] = isolation.missing["cgroup_pids"] = isolation.missing["cgroup_cpu"] = why
    elif cgroups.cpuset is None:
        isolation.missing["cgroup_cpu"] = cgroups.cpuset_missing
    return isolation


def probe_job_user(isolation: Isolation, *, job_user: str, how: str) -> None:
    """The job_user part, for either backend: the worker is root (it can `how`), the
    shared BATCHES_JOB_USER exists if named, and shared folders are protected."""
    if os.geteuid() != 0:
        isolation.missing["job_user"] = f"the worker is not root, so it cannot {how}"
        return
    isolation.switch_users = True
    if job_user:
        try:
            isolation.job_user = job_account(job_user)
        except NoJobAccount as exc:
            isolation.missing["job_user"] = f"BATCHES_JOB_USER: {exc} (see the README's set-up)"
            return
    unprotected = shared_folders_unprotected()
    if unprotected:
        isolation.missing["job_user"] = unprotected


def shared_folders_unprotected() -> str:
    """Why tenants' files in shared sticky folders are not protected from each other
    on this machine ("" if they are)."""
    low = []
    for name, wanted in SHARED_FOLDER_SYSCTLS.items():
        try:
            value = int(Path(f"/proc/sys/fs/{name}").read_text())
        except (OSError, ValueError):
            value = 0
        if value < wanted:
            low.append(f"fs.{name}={wanted}")
    if not low:
        return ""
    return (
        f"tenants' files in shared folders are not protected from each other: set {' '.join(low)} (sysctl, on every machine that runs jobs)"
    )


def etc_binds() -> list[str]:
    """bwrap options that show the needed files of /etc (those that exist), read-only."""
    out: list[str] = []
    for name in ETC_NEEDED:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            out += ["--ro-bind-try", path, path]
    return out


def system_view() -> list[str]:
    """bwrap options that show the system's programs and libraries and the needed files
    of /etc, read-only: what a sealed job sees of the host."""
    out: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.isdir(path):
            out += ["--ro-bind", path, path]
    out += etc_binds()
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            out += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            out += ["--ro-bind", link, link]
    return out


def sandbox_argv(
    *,
    bwrap: str,
    workdir: Path,
    filesystems: list[tuple[str, bool]],
    argv: list[str],
    workdir_bytes: int,
    network: bool = False,
    seccomp_fd: int | None = None,
) -> list[str]:
    """bwrap's argv around `argv`; `filesystems` lists (path, read_only).

    - The working directory is a tmpfs of `workdir_bytes` at its usual path: in memory,
      so the attempt's memory limit bounds it (a job cannot fill the disk with it, and
      nothing of it is left to delete afterwards).
    - No user namespaces inside: tenants without an account of their own share the job
      user, and the kernel counts namespaces per user, so one job creating them could
      stop every other job's sandbox from starting.
    - Without `network` the sandbox has only its own loopback: a job cannot reach the
      service's database or any other service of the machine or its network.
    - `seccomp_fd`: an open file with the filter of `jobs.executors.seccomp`, which
      bubblewrap reads and applies to the job.
    """
    out = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    if network:
        out.append("--share-net")
    if seccomp_fd is not None:
        out += ["--seccomp", str(seccomp_fd)]
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (the sandbox's own, private /tmp)
    out += system_view()
    for path, read_only in sorted(filesystems):
        if os.path.isdir(path):
            out += ["--ro-bind" if read_only else "--bind", path, path]
    out += ["--size", str(workdir_bytes), "--tmpfs", str(workdir), "--chdir", str(workdir), "--", *argv]
    return out
