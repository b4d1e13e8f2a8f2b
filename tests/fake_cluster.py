"""A fake cluster for the tests: the generic cluster executor (`jobs.executors.cluster`,
the same one Slurm uses) with a fake scheduler, so the adopt path can be tried without
a cluster. It is what a fourth backend looks like: one module with a scheduler (its
commands, its states' phases, what an ended task means) and the two hooks (`prepare`,
`send_array`).

The fake scheduler runs each task of a submission at once on this machine: Slurm's own
job script (`slurm_task.py`) in a session of its own, as a node would, with the task's
index in SLURM_ARRAY_TASK_ID. Its state is files in `FAKE_CLUSTER_DIR` (default:
DATA_DIR / "fake-cluster"), so a worker started after the first one died sees the
same cluster: a task is RUNNING while its script lives, and forgotten once it is gone
(the executor then settles it from the exit-status file the script wrote).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

from django.conf import settings

from jobs.executors.base import AttemptSpec, Capacity, Outcome
from jobs.executors.cluster import ClusterExecutor
from jobs.executors.cluster_folders import Submission, Task
from jobs.executors.cluster_outcomes import End, described_by_files
from jobs.executors.cluster_scheduler import Phase, TaskState
from jobs.executors.environment import job_environment
from jobs.executors.slurm import TASK_SCRIPT


def state_dir() -> Path:
    path = Path(os.environ.get("FAKE_CLUSTER_DIR", str(settings.DATA_DIR / "fake-cluster")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


class FakeScheduler:
    """Runs every task at once; remembers, in files, which submission has which array
    id and which process runs each task."""

    def __init__(self, root: Path) -> None:
        self.root = root / "scheduler"
        self.root.mkdir(parents=True, exist_ok=True)
        self._children: dict[int, subprocess.Popen] = {}

    def run(self, submission: Submission, *, indexes: list[int]) -> str:
        array_id = str(time.time_ns())
        for index in indexes:
            env = {
                "PATH": "/usr/bin:/bin",
                "SLURM_ARRAY_JOB_ID": array_id,
                "SLURM_ARRAY_TASK_ID": str(index),
                "SLURMD_NODENAME": "fake-node",
            }
            child = subprocess.Popen(  # noqa: S603 (an argv list)
                [sys.executable, str(TASK_SCRIPT), str(submission.folder)],
                cwd=submission.folder,
                env=env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._children[child.pid] = child
            (self.root / f"{array_id}_{index}.pid").write_text(str(child.pid))
        (self.root / submission.name).write_text(array_id)
        return array_id

    def _pid(self, external_id: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.root / f"{external_id}.pid").read_text())
        return None

    def _running(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        return _alive(pid)

    def tasks(self, *, names: Iterable[str]) -> list[TaskState]:
        states: list[TaskState] = []
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                array_id = (self.root / name).read_text()
                for path in self.root.glob(f"{array_id}_*.pid"):
                    index = int(path.stem.rsplit("_", 1)[1])
                    pid = self._pid(path.stem)
                    if pid is not None and self._running(pid):
                        states.append(TaskState(array_id, index, "RUNNING", Phase.RUNNING, "", "fake-node", name))
        return states

    def cancel(self, *, external_ids: Sequence[str]) -> None:
        for external_id in external_ids:
            pid = self._pid(external_id)
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

    def signal_batch(self, *, external_ids: Sequence[str]) -> None:
        for external_id in external_ids:
            pid = self._pid(external_id)
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

    def ping(self) -> None:
        pass

    def describe_end(self, *, state: str | None, status: dict | None, timeout: int, memory_mib: int, cancel_reason: str) -> End:
        """Its only state is RUNNING: an end is what the exit-status file says."""
        return described_by_files(status=status, timeout=timeout, cancel_reason=cancel_reason, scheduler_name="the fake cluster")

    def state_after_exit(self, *, code: int | None) -> str | None:
        return None


class FakeClusterExecutor(ClusterExecutor):
    kind = "fakecluster"
    scheduler_name = "the fake cluster"
    scheduler: FakeScheduler

    @classmethod
    def from_settings(cls, *, cpus: int | None = None, memory_mib: int | None = None) -> Self:
        return cls(cpus=cpus, memory_mib=memory_mib)

    def __init__(self, *, cpus: int | None = None, memory_mib: int | None = None) -> None:
        root = state_dir()
        super().__init__(
            root=root,
            capacity=Capacity(cpus or 4, memory_mib or 4096),
            scheduler=FakeScheduler(root),
            max_in_flight=16,
            poll_seconds=0.1,
            kill_grace=settings.BATCHES_KILL_GRACE_SECONDS,
        )

    def prepare(self, specs: list[AttemptSpec], *, token: str) -> tuple[Submission | None, list[Outcome]]:
        tasks = [
            {
                "job_id": spec.job_id,
                "attempt": spec.attempt,
                "argv": spec.argv,
                "env": job_environment(spec, worker_id=self.worker_id, workdir=None),
                "log": str(self.log_store.path(spec.log_id)),
                "timeout": spec.timeout_seconds,
                "work_root": str(self.dir / "work"),
                "sandboxed": False,
                "log_max_bytes": settings.BATCHES_LOG_MAX_BYTES,
                "grace": settings.BATCHES_KILL_GRACE_SECONDS,
                "max_processes": 0,
                "seccomp": "",
            }
            for spec in specs
        ]
        submission = Submission.create(root=self.dir, token=token, options=[], tasks=tasks)
        for index, spec in enumerate(specs):
            submission.tasks[index] = Task(spec.job_id, spec.attempt, index, submission, spec.timeout_seconds, spec.memory_mib, spec.cpu)
        return submission, []

    def send_array(self, submission: Submission, *, indexes: list[int]) -> str:
        return self.scheduler.run(submission, indexes=indexes)
