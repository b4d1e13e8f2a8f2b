"""The slurm executor: the generic cluster executor (`jobs.executors.cluster`: task
tracking, never submitting twice, each change reported once, adoption from manifests,
the shared folder's layout) with Slurm as its scheduler.

What only Slurm does, here:
- a submission is one `sbatch --array=0-N` (`%throttle` from
  BATCHES_SLURM_ARRAY_THROTTLE) with the batch's hardware (`--cpus-per-task`, `--mem`,
  a `--time` a little longer than the batch's timeout, `--no-requeue`, the partition
  and account of the settings), named `batches-<token>` (its folder's name); the
  external id of an attempt is `<array job id>_<index>`, as squeue and scancel name it;
- the scheduler is `SlurmCommands` (squeue every BATCHES_SLURM_POLL_MS, scancel,
  `scancel --batch --signal=TERM` for a running task's script, which gives the program
  its grace before killing it; a task still there long after is scancelled);
- what its states mean (`slurm_outcomes`, answered through `SlurmCommands`): squeue's
  states as phases, and Slurm's verdicts on an end (time limit, memory, node failure,
  preemption) with their reason codes;
- the job script (`slurm_task.py`, written to the shared folder with the nodes' Python);
- the largest job is the partition's largest node (or --cpus/--memory);
- sealed (`slurm_sealing`): each batch is submitted as its owner's job account, its
  tasks run their program in bubblewrap, and Slurm's cgroup plugins hold memory, cores
  and processes; the worker reports which parts the cluster enforces;
- /readyz asks the controller (`Probes`).
"""

import logging
import math
import os
import time
from pathlib import Path
from typing import Self

from django.conf import settings

from core.reason_codes import LAUNCH_FAILED
from jobs.executors import task_spec as task_files
from jobs.executors.base import AttemptSpec, Capacity, Outcome, Probes
from jobs.executors.cluster import ClusterExecutor
from jobs.executors.cluster_folders import STATUS, Submission, Task
from jobs.executors.environment import job_environment
from jobs.executors.isolation import SECCOMP, NoJobAccount
from jobs.executors.slurm_commands import SlurmCommands, SlurmRefused, SlurmUnavailable
from jobs.executors.slurm_sealing import SANDBOX_WORKDIR, SECCOMP_FILE, prepare_folders, probe_cluster, seal_submission, sealed_argv

logger = logging.getLogger("jobs.executors.slurm")

_READY_CACHE = 5.0
TASK_SCRIPT = Path(__file__).with_name("slurm_task.py")  # the job script sbatch runs on the nodes


def commands_from_settings() -> SlurmCommands:
    return SlurmCommands(bin_dir=settings.BATCHES_SLURM_BIN, timeout=float(settings.BATCHES_SLURM_COMMAND_TIMEOUT))


def _throttle(spec: AttemptSpec) -> int:
    """The array's `%N`: the batch's `max_running` or the site's
    BATCHES_SLURM_ARRAY_THROTTLE, whichever is smaller (0: neither limits)."""
    limits = [n for n in (spec.max_running, settings.BATCHES_SLURM_ARRAY_THROTTLE) if n]
    return min(limits) if limits else 0


def write_script(*, root: Path, python: str) -> Path:
    """The job script in the shared folder, with the nodes' Python on its first line
    (sbatch copies it at each submission)."""
    lines = TASK_SCRIPT.read_text().splitlines(keepends=True)
    script = root / "slurm_task.py"
    temporary = script.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(f"#!{python}\n" + "".join(lines[1:]))
    temporary.chmod(0o755)
    temporary.replace(script)
    return script


def array_ranges(indexes: list[int]) -> str:
    """`0-9,12,15-16`: sbatch's --array syntax for sorted indexes."""
    parts: list[str] = []
    start = previous = indexes[0]
    for index in [*indexes[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(f"{start}-{previous}" if previous > start else str(start))
        if index is not None:
            start = previous = index
    return ",".join(parts)


class SlurmExecutor(ClusterExecutor, Probes):
    kind = "slurm"
    scheduler_name = "Slurm"
    runs_tasks = True

    _ready: tuple[float, str | None] = (-math.inf, None)
    scheduler: SlurmCommands

    @classmethod
    def from_settings(cls, *, cpus: int | None = None, memory_mib: int | None = None) -> Self:
        """BATCHES_SLURM_*: the commands, the shared folder, the partition and account;
        the largest job is `cpus` and `memory_mib`, else the partition's largest node."""
        return cls(cpus=cpus, memory_mib=memory_mib)

    def __init__(self, *, cpus: int | None = None, memory_mib: int | None = None) -> None:
        commands = commands_from_settings()
        super().__init__(
            root=settings.BATCHES_SLURM_DIR,
            capacity=self._largest_job(commands, cpus, memory_mib),
            scheduler=commands,
            max_in_flight=settings.BATCHES_SLURM_MAX_SUBMITTED or self._twice_the_cluster(commands),
            poll_seconds=settings.BATCHES_SLURM_POLL_MS / 1000,
            kill_grace=settings.BATCHES_KILL_GRACE_SECONDS,
        )
        self.commands = commands
        self._script = write_script(root=self.dir, python=settings.BATCHES_SLURM_PYTHON)
        self.isolation = probe_cluster(self.commands)
        if self.isolation.switch_users:
            prepare_folders(root=self.dir, log_dir=self.log_store.directory)

    @staticmethod
    def _largest_job(commands: SlurmCommands, cpus: int | None, memory_mib: int | None) -> Capacity:
        if cpus and memory_mib:
            return Capacity(cpus, memory_mib)
        try:
            node_cpus, node_memory = commands.largest_node(partition=settings.BATCHES_SLURM_PARTITION)
        except (SlurmUnavailable, SlurmRefused) as exc:
            logger.warning("cannot ask Slurm for its largest node (%s); using BATCHES_MAX_CPU and BATCHES_MAX_MEMORY_MIB", exc)
            node_cpus, node_memory = settings.BATCHES_MAX_CPU, settings.BATCHES_MAX_MEMORY_MIB
        return Capacity(cpus or node_cpus, memory_mib or node_memory)

    @staticmethod
    def _twice_the_cluster(commands: SlurmCommands) -> int:
        """BATCHES_SLURM_MAX_SUBMITTED unset: twice the partition's cpus (settings.py
        says why), or BATCHES_MAX_CPU twice when sinfo does not answer."""
        try:
            cpus = commands.total_cpus(partition=settings.BATCHES_SLURM_PARTITION)
        except (SlurmUnavailable, SlurmRefused) as exc:
            logger.warning("cannot ask Slurm for its cpus (%s); at most 2 x BATCHES_MAX_CPU are submitted at once", exc)
            cpus = settings.BATCHES_MAX_CPU
        return 2 * cpus

    def runs_as_root_problem(self, *, accounts_exist: bool) -> str:
        return self.isolation.root_problem(accounts_exist=accounts_exist, verb="submit")

    # -- the cluster executor's two hooks ------------------------------------------------
    def prepare(self, specs: list[AttemptSpec], *, token: str) -> tuple[Submission | None, list[Outcome]]:
        try:
            user = self.isolation.account_for(specs[0].run_as, specs[0].run_as_uid)
        except NoJobAccount as exc:
            return None, [Outcome(s.job_id, s.attempt, succeeded=False, reason=str(exc), reason_code=LAUNCH_FAILED) for s in specs]
        refused: list[Outcome] = []
        argvs: dict[str, list[str]] = {}
        for spec in specs:
            filesystems = [(path, name in spec.read_only) for name, path in spec.filesystems.items()]
            if spec.task is not None:
                if self.isolation.bwrap is None:
                    reason = "a task's steps run only in the sandbox, and this cluster has none (BATCHES_SLURM_BWRAP); ask your operator"
                    refused.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=reason, reason_code=LAUNCH_FAILED))
                else:
                    argvs[spec.job_id] = []  # the runner's, once the task's index is known
                continue
            try:
                argvs[spec.job_id] = sealed_argv(
                    self.isolation, argv=spec.argv, filesystems=filesystems, memory_bytes=spec.memory_mib << 20
                )
            except FileNotFoundError as exc:
                reason = f"could not start {spec.argv[0]}: {exc.strerror or exc}"
                refused.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=reason, reason_code=LAUNCH_FAILED))
        specs = [spec for spec in specs if spec.job_id in argvs]
        if not specs:
            return None, refused
        sealed = self.isolation.bwrap is not None
        folder = self.dir / token
        tasks = []
        for index, spec in enumerate(specs):
            # A task's runner is not sandboxed itself: it runs each step in a sandbox of its own.
            sandboxed = sealed and spec.task is None
            tasks.append(
                {
                    "job_id": spec.job_id,
                    "attempt": spec.attempt,
                    "argv": argvs[spec.job_id] or task_files.runner_argv_cluster(folder, index),
                    "env": job_environment(spec, worker_id=self.worker_id, workdir=SANDBOX_WORKDIR if sandboxed else None),
                    "log": str(self.log_store.path(spec.log_id)),
                    "timeout": spec.timeout_seconds,
                    "work_root": settings.BATCHES_SLURM_NODE_WORK_DIR,
                    "sandboxed": sandboxed,
                    "log_max_bytes": settings.BATCHES_LOG_MAX_BYTES,
                    "grace": settings.BATCHES_KILL_GRACE_SECONDS,
                    "max_processes": settings.BATCHES_JOB_MAX_PROCESSES if sealed else 0,
                    "seccomp": str(folder / SECCOMP_FILE) if sealed and SECCOMP is not None else "",
                }
            )
        options = self._options(specs[0], folder, token)
        if user is not None:
            options += [f"--uid={user.uid}", f"--gid={user.gid}"]
        submission = Submission.create(root=self.dir, token=token, options=options, tasks=tasks, throttle=_throttle(specs[0]))
        for index, spec in enumerate(specs):
            if spec.task is not None:
                env = job_environment(spec, worker_id=self.worker_id, workdir=None)
                task_files.write_for_cluster(task=spec.task, folder=folder, index=index, isolation=self.isolation, env=env)
        seal_submission(
            folder=submission.folder, log_files=[Path(task["log"]) for task in tasks], user=user, log_dir=self.log_store.directory
        )
        for index, spec in enumerate(specs):
            submission.tasks[index] = Task(spec.job_id, spec.attempt, index, submission, spec.timeout_seconds, spec.memory_mib, spec.cpu)
        return submission, refused

    def _options(self, spec: AttemptSpec, folder: Path, token: str) -> list[str]:
        minutes = math.ceil((spec.timeout_seconds + 60) / 60)  # the task stops it at the timeout; this is a backstop
        options = [
            f"--job-name=batches-{token}",
            f"--comment=batches batch {spec.batch_id}",
            f"--chdir={folder}",
            f"--output={folder}/{STATUS}/%a.out",
            f"--cpus-per-task={spec.cpu}",
            f"--mem={spec.memory_mib}M",
            f"--time={minutes}",
            "--no-requeue",
        ]
        if settings.BATCHES_SLURM_PARTITION:
            options.append(f"--partition={settings.BATCHES_SLURM_PARTITION}")
        if settings.BATCHES_SLURM_ACCOUNT:
            options.append(f"--account={settings.BATCHES_SLURM_ACCOUNT}")
        return options

    def send_array(self, submission: Submission, *, indexes: list[int]) -> str:
        array = array_ranges(indexes) + (f"%{submission.throttle}" if submission.throttle else "")
        return self.commands.submit(
            options=[f"--array={array}", *submission.options], script=str(self._script), script_args=[str(submission.folder)]
        )

    @classmethod
    def check_ready(cls) -> str | None:
        """None when the controller answers (asked at most every few seconds)."""
        checked, problem = cls._ready
        if time.monotonic() - checked < _READY_CACHE:
            return problem
        try:
            commands_from_settings().ping()
            problem = None
        except (SlurmUnavailable, SlurmRefused) as exc:
            problem = f"Slurm controller: {exc}"
        cls._ready = (time.monotonic(), problem)
        return problem
