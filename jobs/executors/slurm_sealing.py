"""Sealing Slurm jobs: what the cluster enforces, and what the worker prepares so that
each task runs as its tenant's account, in the same sandbox as a local sealed job.

The parts, as the local executor names them:
- job_user: the worker is root and submits each batch with `sbatch --uid --gid` of the
  owner's job account (`accounts.JobAccount`, or the shared BATCHES_JOB_USER on a
  deployment without accounts); the submission's folder stays root's, its task files
  are the account's alone (0400) and only its `status/` subfolder is writable by it;
- sandbox: the task script runs the program inside bubblewrap (`BATCHES_SLURM_BWRAP`
  on the nodes): system paths read-only, only the needed /etc files, the batch's
  filesystems, a private /tmp and working directory, no network, no service data;
- cgroup_memory, cgroup_pids, cgroup_cpu: Slurm's cgroup plugins, read from the
  controller's configuration (`ConstrainRAMSpace`, `proctrack/cgroup`, `ConstrainCores`
  with `task/cgroup`). Slurm limits no process count: the task script sets the
  account's RLIMIT_NPROC (BATCHES_JOB_MAX_PROCESSES beyond what the account already
  runs on the node), so a fork bomb cannot take the node's pids from other tenants.
The log cap holds because the task script writes the program's output through a pipe it
drains up to the cap (nothing of the job holds the log file itself).
"""

import os
from pathlib import Path

from django.conf import settings

from jobs.executors.cluster_folders import STATUS
from jobs.executors.isolation import (
    SECCOMP,
    Isolation,
    JobUser,
    allow_traverse,
    ensure_visible,
    probe_job_user,
    sandbox_argv,
)
from jobs.executors.slurm_commands import SlurmCommands, SlurmRefused, SlurmUnavailable

# Where the program's working directory is inside the sandbox (a tmpfs of the job's
# memory size, as for local jobs); HOME, TMPDIR and BATCH_WORK_DIR point at it.
SANDBOX_WORKDIR = "/tmp/work"  # noqa: S108 (inside the sandbox's own /tmp)
# The file descriptor the task script gives bubblewrap the seccomp filter on (the
# submission's `seccomp.bpf`, written by the worker).
SECCOMP_FD = 10
SECCOMP_FILE = "seccomp.bpf"


def probe_cluster(commands: SlurmCommands) -> Isolation:
    """Which parts seal this cluster's jobs, and why each missing one is missing."""
    isolation = Isolation(network=settings.BATCHES_JOB_NETWORK == "host")
    if settings.BATCHES_ISOLATION == "off":
        return Isolation.none("BATCHES_ISOLATION is off")
    probe_job_user(isolation, job_user=settings.BATCHES_JOB_USER, how="submit jobs as their tenants' accounts (sbatch --uid)")
    bwrap = settings.BATCHES_SLURM_BWRAP
    if bwrap and os.access(bwrap, os.X_OK):
        isolation.bwrap = bwrap
    else:
        isolation.missing["sandbox"] = (
            f"bubblewrap is not at BATCHES_SLURM_BWRAP ({bwrap or 'empty'}) on this machine (the nodes need it too)"
        )
    try:
        config = commands.config()
    except (SlurmUnavailable, SlurmRefused) as exc:
        why = f"cannot read the cluster's configuration ({exc})"
        isolation.missing.update({"cgroup_memory": why, "cgroup_pids": why, "cgroup_cpu": why})
        return isolation
    task_cgroup = "task/cgroup" in config.get("TaskPlugin", "")
    if not (task_cgroup and config.get("ConstrainRAMSpace", "").lower() == "yes"):
        isolation.missing["cgroup_memory"] = "the cluster does not constrain memory (TaskPlugin=task/cgroup and ConstrainRAMSpace=yes)"
    if config.get("ProctrackType") != "proctrack/cgroup":
        isolation.missing["cgroup_pids"] = "the cluster does not track a job's processes by cgroup (ProctrackType=proctrack/cgroup)"
    # Processes: every one of a job is tracked and killed with it (proctrack/cgroup);
    # how many there may be is bounded by the task script (RLIMIT_NPROC of the tenant's
    # account: BATCHES_JOB_MAX_PROCESSES beyond what it runs on the node when the task
    # starts), since Slurm sets no pids limit.
    if not (task_cgroup and config.get("ConstrainCores", "").lower() == "yes"):
        isolation.missing["cgroup_cpu"] = "the cluster does not hold jobs to their cores (TaskPlugin=task/cgroup and ConstrainCores=yes)"
    return isolation


def prepare_folders(*, root: Path, log_dir: Path) -> None:
    """The shared folder and the log folder, passable (never listable) by the tasks'
    accounts: each task's own folder and log file are made its account's."""
    for folder in (root, log_dir):
        folder.chmod(folder.stat().st_mode & ~0o006 | 0o001)  # others: traverse only
        allow_traverse(folder)


def seal_submission(*, folder: Path, log_files: list[Path], user: JobUser | None, log_dir: Path) -> None:
    """The submission's folder stays the worker's (root's: what it writes there, it
    writes through no link of a tenant's); its task files are readable by the account
    alone, and its `status/` subfolder, where the tasks write, is the account's. Each
    log file is created for the account to append to and for the service (the log
    folder's group) to read, and nobody else."""
    if SECCOMP is not None:
        (folder / SECCOMP_FILE).write_bytes(SECCOMP)
    if user is None:
        return
    folder.chmod(0o711)
    for task_file in folder.glob("*.json"):
        if task_file.name != "manifest.json":  # the account's alone, whatever its group holds
            os.chown(task_file, user.uid, 0)
            task_file.chmod(0o400)
    os.chown(folder / STATUS, user.uid, user.gid)
    (folder / STATUS).chmod(0o700)
    group = log_dir.stat().st_gid
    for log in log_files:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            os.fchown(fd, user.uid, group)
            os.fchmod(fd, 0o640)
        finally:
            os.close(fd)


def sealed_argv(isolation: Isolation, *, argv: list[str], filesystems: list[tuple[str, bool]], memory_bytes: int) -> list[str]:
    """The task's argv inside the sandbox (unchanged without one). A program outside
    what the sandbox shows cannot run: FileNotFoundError, as locally."""
    if isolation.bwrap is None:
        return argv
    ensure_visible(argv[0], filesystems=filesystems)
    return sandbox_argv(
        bwrap=isolation.bwrap,
        workdir=Path(SANDBOX_WORKDIR),
        filesystems=filesystems,
        argv=argv,
        workdir_bytes=memory_bytes,
        network=isolation.network,
        seccomp_fd=SECCOMP_FD if SECCOMP is not None else None,
    )
