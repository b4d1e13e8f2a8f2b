"""Starting a local attempt's process: the one place it is spawned (`LocalExecutor`)."""

import contextlib
import errno
import os
import resource
import shutil
import subprocess
from pathlib import Path

from django.conf import settings

from jobs.executors import task_spec
from jobs.executors.base import AttemptSpec, LaunchError
from jobs.executors.cgroups import AttemptCgroup
from jobs.executors.environment import job_environment
from jobs.executors.isolation import Isolation, JobUser, join_mode, launch, release_launch
from jobs.executors.launcher import Launched, Launchers, NotHeld

MIB = 1024 * 1024
PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin:/usr/sbin:/sbin")


def spawn(
    attempt: AttemptSpec,
    *,
    isolation: Isolation,
    worker_id: str,
    workdir: Path,
    out_fd: int,
    cores: list[int],
    user: JobUser | None,
    launchers: Launchers | None = None,
    after: Launched | None = None,
) -> tuple[subprocess.Popen | Launched, AttemptCgroup | None]:
    """Start the attempt's program (see `jobs.executors.local`): its argv through the
    sandbox and cgroup `isolation` gives, or without a cgroup under an address-space
    limit (from one of `launchers`, else through prlimit), pinned to `cores`, its output
    into `out_fd`. A task's attempt runs its runner instead, which runs each step sealed
    (`jobs.executors.task_spec`). With `after`, it is held by that spawn's launcher until
    that one has ended (`LocalExecutor.hold`), or not started at all (NotHeld). Raises
    OSError when it cannot start, LaunchError when it must not, LauncherGone when its
    launcher could not be reached."""
    if attempt.task is not None and after is not None:
        raise NotHeld("a task's runner does not go through a launcher")
    if attempt.task is not None:
        if isolation.bwrap is None:
            raise LaunchError("a task's steps run only in the sandbox, and this worker has none (bubblewrap); ask your operator")
        argv = task_spec.runner_argv(workdir)
    else:
        argv = attempt.argv
        program = argv[0]
        # prlimit and bwrap would report a missing program as their own exit code 1.
        if not os.path.isfile(program):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)
        if not os.access(program, os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", program)
    limit = attempt.memory_mib * MIB
    filesystems = [(path, name in attempt.read_only) for name, path in attempt.filesystems.items()]
    argv, options, cgroup = launch(
        isolation,
        argv=argv,
        workdir=workdir,
        filesystems=filesystems,
        memory_bytes=limit,
        max_processes=settings.BATCHES_JOB_MAX_PROCESSES,
        cores=cores,
        name=f"{attempt.job_id}.{attempt.attempt}",
        user=user,
        sandbox=attempt.task is None,
    )
    env = job_environment(attempt, worker_id=worker_id, workdir=str(workdir))
    if attempt.task is not None:
        try:
            seccomp_fd = options.get("pass_fds", (None,))[0]
            task_spec.prepare(
                task=attempt.task, workdir=workdir, isolation=isolation, seccomp_fd=seccomp_fd, env=env, user=user, memory_bytes=limit
            )
        except BaseException:
            task_spec.release(workdir)
            release_launch(options, cgroup)
            raise
    launched = None
    if cgroup is None and launchers is not None and set(options) <= {"umask"}:
        # No cgroup: a per-process address-space limit is the best there is.
        # LauncherGone (the launcher died): the service's failure, not the job's.
        launched = launchers.start(
            limit=limit, argv=argv, env=env, cwd=workdir, out_fd=out_fd, cores=cores, umask=options.get("umask", -1), after=after
        )
    if launched is not None:
        return launched, None
    if after is not None:
        release_launch(options, cgroup)
        raise NotHeld("it does not go through its predecessor's launcher")
    if cgroup is None:
        if PRLIMIT:
            argv = [PRLIMIT, f"--as={limit}", "--", *argv]
        else:
            options["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cores)
        try:
            entered = cgroup.entered_by_this_thread() if cgroup is not None and join_mode(cgroup) == "thread" else contextlib.nullcontext()
            with entered:
                popen = subprocess.Popen(  # noqa: S603 (an argv list: no shell ever runs)
                    argv,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_fd,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    **options,
                )
        finally:
            os.sched_setaffinity(0, mask)
    except BaseException:
        release_launch(options, cgroup)
        raise
    for fd in options.get("pass_fds", ()):
        os.close(fd)
    return popen, cgroup
