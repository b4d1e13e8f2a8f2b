"""A fake cluster executor for the tests: attempts outlive the worker that started them,
as Slurm jobs do, so the adopt path can be tried without a cluster.

It stands in for a scheduler (mock: no cluster runs in these tests; the real Slurm
backend has its own tests against real daemons). Each attempt runs under a small
"step" process (`fake_cluster_step.py`), started in its own session, that runs
the argv with its output in the job's log and writes `<external id>.exit` in the
cluster's state directory when it ends, as a cluster keeps accounting. The worker
follows attempts by those files only, so a new worker started after the first one died
can adopt them. The state directory is `FAKE_CLUSTER_DIR` (default: DATA_DIR /
"fake-cluster").
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from django.conf import settings

from jobs.executors.base import AttemptSpec, Capacity, Executor, LiveAttempt, Outcome, Report, Started
from jobs.logs import log_path

ROOT = Path(__file__).resolve().parent.parent
STEP = Path(__file__).with_name("fake_cluster_step.py")


def state_dir() -> Path:
    path = Path(os.environ.get("FAKE_CLUSTER_DIR", str(settings.DATA_DIR / "fake-cluster")))
    path.mkdir(parents=True, exist_ok=True)
    return path


class FakeClusterExecutor(Executor):
    kind = "fakecluster"
    queues_work = True
    attempts_survive_worker = True

    def __init__(self, *, worker_id: str = "", cpus: int | None = None, memory_mib: int | None = None, **_: object) -> None:
        self.worker_id = worker_id
        self._capacity = Capacity(cpus or 4, memory_mib or 4096)
        self._running: dict[str, tuple[int, str, str]] = {}  # job id -> (attempt, external id, reason if cancelled)
        self.dir = state_dir()

    def capacity(self) -> Capacity:
        return self._capacity

    def free(self) -> Capacity:
        # The cluster queues what it cannot run yet: accept up to 16 attempts in flight.
        return Capacity(16 - len(self._running), self._capacity.memory_mib * 16)

    def active(self) -> dict[str, int]:
        return {job_id: attempt for job_id, (attempt, _, _) in self._running.items()}

    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        reports: list[Report] = []
        for spec in specs:
            external_id = f"{spec.job_id}.{spec.attempt}"
            argv = [sys.executable, str(STEP), str(self.dir), external_id, str(log_path(spec.log_id)), *spec.argv]
            env = {"PATH": "/usr/bin:/bin", "BATCH_JOB_ID": spec.job_id, "BATCH_ATTEMPT": str(spec.attempt)}
            subprocess.Popen(  # noqa: S603 (an argv list)
                argv,
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._running[spec.job_id] = (spec.attempt, external_id, "")
            reports.append(Started(spec.job_id, spec.attempt, external_id=external_id, node="fake-node"))
        return reports

    def poll(self, *, timeout: float, wake_fd: int | None = None) -> list[Report]:
        deadline = time.monotonic() + timeout
        while True:
            outcomes = [self._outcome(job_id) for job_id in list(self._running) if (self.dir / f"{self._running[job_id][1]}.exit").exists()]
            if outcomes or time.monotonic() >= deadline:
                return outcomes
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _outcome(self, job_id: str) -> Outcome:
        attempt, external_id, reason = self._running.pop(job_id)
        code = int((self.dir / f"{external_id}.exit").read_text())
        if reason:
            return Outcome(job_id, attempt, succeeded=False, exit_code=None, reason=reason)
        if code == 0:
            return Outcome(job_id, attempt, succeeded=True, exit_code=0)
        return Outcome(job_id, attempt, succeeded=False, exit_code=code, reason=f"exit code {code}")

    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str) -> None:
        for job_id, attempt in keys:
            if job_id in self._running and self._running[job_id][0] == attempt:
                _, external_id, _ = self._running[job_id]
                self._running[job_id] = (attempt, external_id, reason)
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int((self.dir / f"{external_id}.pid").read_text()), signal.SIGKILL)

    def adopt(self, attempts: list[LiveAttempt]) -> list[Report]:
        reports: list[Report] = []
        for attempt in attempts:
            external_id = attempt.external_id or f"{attempt.job_id}.{attempt.attempt}"
            known = (self.dir / f"{external_id}.pid").exists() or (self.dir / f"{external_id}.exit").exists()
            if not known:  # never reached the cluster: it is safe to run again
                reports.append(Outcome(attempt.job_id, attempt.attempt, succeeded=False, reason="never started", charged=False))
                continue
            self._running[attempt.job_id] = (attempt.attempt, external_id, "")
        return reports

    def recover(self, *, is_dead: Callable[[str], bool]) -> int:
        return 0  # nothing of a dead worker's is to be killed: it is adopted
