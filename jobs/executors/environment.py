"""The environment an attempt's program sees, whatever executor runs it: nothing of the
worker's (DATABASE_URL, SECRET_KEY...) leaks; only what describes the job."""

import re

from jobs.executors.base import AttemptSpec

_ENV_NAME_RE = re.compile(r"[^A-Z0-9]")


def filesystem_env_name(name: str) -> str:
    return "BATCH_FS_" + _ENV_NAME_RE.sub("_", name.upper())


def job_environment(attempt: AttemptSpec, *, worker_id: str, workdir: str | None) -> dict[str, str]:
    """PATH, locale, BATCH_* (job, batch, attempt, log, worker, cpus, memory), a variable
    per filesystem (BATCH_FS_<NAME>), and the thread-count hints runtimes size themselves
    by. With `workdir`, HOME, TMPDIR and BATCH_WORK_DIR point at it (a cluster's node
    picks its own directory and adds them there)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "BATCH_JOB_ID": attempt.job_id,
        "BATCH_BATCH_ID": attempt.batch_id,
        "BATCH_ATTEMPT": str(attempt.attempt),
        "BATCH_LOG_ID": attempt.log_id,
        "BATCH_WORKER_ID": worker_id,
        "BATCH_CPUS": str(attempt.cpu),
        "BATCH_MEMORY_MIB": str(attempt.memory_mib),
        # Common runtimes size themselves from these rather than from the limits.
        "OMP_NUM_THREADS": str(attempt.cpu),
        "MALLOC_ARENA_MAX": "2",
        "PYTHONUNBUFFERED": "1",
    }
    if workdir is not None:
        env.update(HOME=workdir, TMPDIR=workdir, BATCH_WORK_DIR=workdir)
    for name, path in attempt.filesystems.items():
        env[filesystem_env_name(name)] = path
    return env
