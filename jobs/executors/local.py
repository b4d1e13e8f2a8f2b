"""The local executor: attempts run as child processes of the worker, on its machine.

Each attempt:
- runs `argv` directly (no shell), in a fresh working directory of its own, with a
  clean environment: PATH, HOME/TMPDIR (the working directory), BATCH_FS_<NAME> for each
  of the batch's filesystems, BATCH_JOB_ID, BATCH_ATTEMPT, BATCH_WORKER_ID...;
- leads a new session and process group, so its whole tree can be signalled at once;
- writes stdout and stderr into a pipe that the worker drains into its log file, so
  the log holds what the job wrote and never more than the cap (a job holding the log
  file itself could preallocate disk past its size, or write holes);
- is limited to `memory_mib` of address space (RLIMIT_AS) and pinned to `cpu` cores,
  both in force before the program's first instruction, so nothing it forks escapes
  them. Setting them in a preexec_fn would force a full fork() of the worker (about 4
  times slower than the vfork() subprocess uses otherwise), so instead the program is
  started by a launcher, a small process of the worker's that holds that limit itself
  (`jobs.executors.launcher`), or else through util-linux `prlimit --as=N -- argv...`
  (one extra exec, in the child). Either spawns from a thread whose own cpu mask is the
  job's cores for the duration of the spawn (a new process inherits its creator's
  mask). Without `prlimit` on the machine the limit is set by a preexec_fn;
- has a wall-clock limit; at the end (exit, timeout, cancel), whatever is left of its
  processes gets SIGTERM, a grace period, then SIGKILL, and its outcome is reported
  only once they are gone. In a sandbox, SIGTERM goes to the job's processes, not to
  bubblewrap (which would die of it and take the job with it at once).
"""

import contextlib
import logging
import math
import os
import selectors
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Self

from django.conf import settings

from core import reason_codes
from jobs.executors import attempt_logs, task_spec
from jobs.executors.attempt_output import AttemptOutput
from jobs.executors.base import (
    AttemptSpec,
    Capacity,
    Executor,
    Holds,
    LaunchError,
    Outcome,
    Recovers,
    Report,
    Returned,
    Started,
    WakeUp,
    internal_error,
)
from jobs.executors.cgroups import AttemptCgroup
from jobs.executors.cores import CoreAllocator
from jobs.executors.isolation import Isolation, NoJobAccount, allow_traverse, probe
from jobs.executors.launcher import LOST, Launched, LauncherGone, Launchers, NotHeld
from jobs.executors.local_attempt import LocalAttempt, could_not_start, to_hold_behind
from jobs.executors.local_outcomes import describe, reap
from jobs.executors.local_spawn import spawn
from jobs.executors.procs import group_alive, kill_processes, processes_with_env
from jobs.executors.usage import own_peak_rss_bytes
from jobs.executors.workdirs import Remover, remove_dir

logger = logging.getLogger("jobs.executors.local")

MIB = 1024 * 1024
_DRAIN_POLL = 0.02  # while a finished leader's group is still being stopped


def machine_capacity() -> Capacity:
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    return Capacity(cpus=cores, memory_mib=memory)


class LocalExecutor(Executor, Recovers, Holds):
    kind = "local"

    @classmethod
    def from_settings(cls, *, cpus: int | None = None, memory_mib: int | None = None) -> Self:
        """The machine's cores and memory (or `cpus`, `memory_mib`), BATCHES_WORK_DIR,
        BATCHES_KILL_GRACE_SECONDS, and the isolation BATCHES_ISOLATION asks for."""
        return cls(cpus=cpus, memory_mib=memory_mib)

    def __init__(
        self,
        *,
        cpus: int | None = None,
        memory_mib: int | None = None,
        grace_seconds: float | None = None,
        work_dir: Path | None = None,
        keep_work_dirs: bool = False,
        isolation: Isolation | None = None,
    ) -> None:
        machine = machine_capacity()
        self._capacity = Capacity(cpus=cpus or machine.cpus, memory_mib=memory_mib or machine.memory_mib)
        self.grace = settings.BATCHES_KILL_GRACE_SECONDS if grace_seconds is None else grace_seconds
        self.work_dir = Path(work_dir or settings.BATCHES_WORK_DIR)
        self.keep_work_dirs = keep_work_dirs
        # What seals attempts on this machine (see jobs.executors.isolation).
        if isolation is None:
            off = settings.BATCHES_ISOLATION == "off"
            isolation = (
                Isolation.none("BATCHES_ISOLATION is off")
                if off
                else probe(job_user=settings.BATCHES_JOB_USER, network=settings.BATCHES_JOB_NETWORK == "host")
            )
        self.isolation = isolation
        self.log_max_bytes = settings.BATCHES_LOG_MAX_BYTES
        self._leftover_cgroups: list[AttemptCgroup] = []
        self._remover = Remover()
        self._launchers = Launchers()
        weakref.finalize(self, self._launchers.close)
        self.node = socket.gethostname()
        self._cores = CoreAllocator()
        self._running: dict[str, LocalAttempt] = {}
        self._used = Capacity(0, 0)
        self._selector = selectors.DefaultSelector()
        log_dir = self.log_store.directory
        log_dir.mkdir(parents=True, exist_ok=True)
        # A root worker's log files take the log folder's group, so that a web server
        # running as the service's user (in that group) reads them; nobody else can.
        self._log_group = log_dir.stat().st_gid if os.geteuid() == 0 else None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.isolation.switch_users:
            allow_traverse(self.work_dir)

    # -- capacity -------------------------------------------------------------------
    def capacity(self) -> Capacity:
        return self._capacity

    def free(self) -> Capacity:
        return Capacity(self._capacity.cpus - self._used.cpus, self._capacity.memory_mib - self._used.memory_mib)

    def active(self) -> dict[str, int]:
        return {job_id: run.attempt.attempt for job_id, run in self._running.items()}

    # -- starting -------------------------------------------------------------------
    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        reports: list[Report] = []
        for spec in specs:
            try:
                started = self._start(spec)
                if started is not None:
                    reports.append(started)
            except LaunchError as exc:
                reports.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=str(exc), reason_code=reason_codes.LAUNCH_FAILED))
            except LauncherGone as exc:  # as when it dies after the request: not the job's fault, it runs again
                reason = f"could not start {spec.argv[0] if spec.argv else 'the task runner'}: {exc}"
                reports.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=reason, reason_code=reason_codes.INTERNAL_ERROR))
            except Exception as exc:  # one bad attempt must not stop the others
                logger.exception("could not start job %s attempt %s", spec.job_id, spec.attempt)
                reason = internal_error(exc)
                reports.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=reason, reason_code=reason_codes.INTERNAL_ERROR))
        return reports

    def hold(self, specs: list[AttemptSpec]) -> int:
        """Hold the leading specs behind running attempts of the same cores and memory
        started by a launcher less than HOLD_SECONDS ago (`Holds`): the launcher starts
        each the moment its predecessor is reaped, on its cores. One that cannot be held
        (no such attempt, sealed, a request too large...) ends the run: it is left for
        `submit`, which says what is wrong with it if anything is."""
        held = 0
        for spec in specs:
            before = to_hold_behind(self._running.values(), spec, time.monotonic())
            if before is None:
                break
            try:
                self._start(spec, after=before)
            except (NotHeld, LaunchError, LauncherGone):
                break
            except Exception:
                logger.exception("could not hold job %s attempt %s", spec.job_id, spec.attempt)
                break
            held += 1
        return held

    def held(self) -> list[AttemptSpec]:
        return [run.attempt for run in self._running.values() if run.held]

    def _start(self, attempt: AttemptSpec, *, after: LocalAttempt | None = None) -> Started | None:
        """Its Started, or None when a launcher was asked to start it (its answer comes
        through `collect`). `after`: held behind that attempt, to take its cores and
        memory when it ends (raises NotHeld if it cannot be)."""
        if attempt.job_id in self._running:
            raise LaunchError(f"job {attempt.job_id} already has a live attempt here")
        # A directory per attempt: a late-dying earlier attempt can never share (or
        # delete) the next one's files.
        workdir = self.work_dir / f"{attempt.job_id}.{attempt.attempt}"
        try:
            workdir.mkdir(parents=True)
        except FileExistsError:  # left by a crashed worker: start from an empty one
            task_spec.release(workdir)
            remove_dir(workdir)
            workdir.mkdir(parents=True)
        cores = self._cores.take(attempt.cpu) if after is None else after.cores
        output = None
        try:
            try:
                user = self.isolation.account_for(attempt.run_as, attempt.run_as_uid)
            except NoJobAccount as exc:
                raise LaunchError(str(exc)) from exc
            output = AttemptOutput(
                path=self.log_store.path(attempt.log_id), attempt=attempt.attempt, cap=self.log_max_bytes, group=self._log_group
            )
            try:
                spawned, spawned_wall = time.monotonic(), time.time()
                popen, cgroup = spawn(
                    attempt,
                    isolation=self.isolation,
                    worker_id=self.worker_id,
                    workdir=workdir,
                    out_fd=output.write_fd,
                    cores=cores,
                    user=user,
                    launchers=self._launchers,
                    after=after.popen if after is not None else None,
                )
            except OSError as exc:
                if after is not None:  # left for submit, which says why
                    raise NotHeld(str(exc)) from exc
                message = could_not_start(attempt, exc)
                output.note(message)
                raise LaunchError(message) from exc
        except BaseException:
            if output is not None:
                output.abandon()
            if after is None:
                self._cores.release(cores)
            task_spec.release(workdir)
            remove_dir(workdir)
            raise
        output.started()
        self._selector.register(output.read_fd, selectors.EVENT_READ, ("out", attempt.job_id))
        pidfd = None
        rss_floor = None  # a launcher's child's: the launcher's, told in its answer
        if not isinstance(popen, Launched):  # a launcher reports its children's ends
            with contextlib.suppress(OSError, AttributeError):
                pidfd = os.pidfd_open(popen.pid)
                self._selector.register(pidfd, selectors.EVENT_READ, attempt.job_id)
            rss_floor = own_peak_rss_bytes() if cgroup is None else None
        run = LocalAttempt(
            attempt=attempt,
            popen=popen,
            cores=cores,
            workdir=workdir,
            output=output,
            deadline=time.monotonic() + attempt.timeout_seconds,
            pidfd=pidfd,
            cgroup=cgroup,
            spawned=spawned,
            spawned_wall=spawned_wall,
            rss_floor=rss_floor,
            announced=not isinstance(popen, Launched),
            after=after,
            owns_slot=after is None,
        )
        self._running[attempt.job_id] = run
        if after is not None:
            after.successor = run
        else:
            self._used = Capacity(self._used.cpus + attempt.cpu, self._used.memory_mib + attempt.memory_mib)
        return self._started(run) if run.announced else None

    def _started(self, run: LocalAttempt) -> Started:
        # The pid (with the node) names the attempt. Its start time would tell a reused
        # pid apart, but reading /proc/<pid>/stat of a process that is still exec'ing
        # waits for the exec, which cost as much as the spawn itself.
        attempt = run.attempt
        return Started(
            attempt.job_id, attempt.attempt, external_id=str(run.pgid), node=self.node, log_offset=run.output.start, time=run.spawned_wall
        )

    def _answered(self, run: LocalAttempt, launched: Launched) -> Report:
        """A launcher's answer for `run`: its Started (and the stop asked meanwhile), the
        Outcome of a program that could not start, or a held one given back."""
        attempt = run.attempt
        if launched.withdrawn:
            del self._running[attempt.job_id]
            self._free(run)
            self._unwatch(run)
            run.output.withdraw()
            task_spec.release(run.workdir)
            remove_dir(run.workdir)
            if run.stop_reason:  # cancelled while held: it ends without having started
                return Outcome(attempt.job_id, attempt.attempt, succeeded=False, reason=run.stop_reason, reason_code=run.stop_code)
            return Returned(attempt)
        if launched.error is not None:
            del self._running[attempt.job_id]
            self._free(run)
            message = could_not_start(attempt, launched.error)
            self._unwatch(run)
            run.output.note(message)
            run.output.close()
            task_spec.release(run.workdir)
            remove_dir(run.workdir)
            # A launcher that died is the service's fault, not the job's: it runs again.
            code = reason_codes.INTERNAL_ERROR if launched.lost else reason_codes.LAUNCH_FAILED
            return Outcome(attempt.job_id, attempt.attempt, succeeded=False, reason=message, reason_code=code)
        run.announced = True
        run.rss_floor = launched.launcher_peak_rss
        run.spawned, run.spawned_wall = launched.spawned, launched.spawned_wall
        run.deadline = run.spawned + attempt.timeout_seconds
        if run.killed:
            run.kill()
        elif run.term_at is not None:
            run.term_at = None
            self._terminate(run, time.monotonic())
        return self._started(run)

    def _unwatch(self, run: LocalAttempt) -> None:
        for fd in (run.pidfd, run.output.read_fd):
            if fd is not None and fd in self._selector.get_map():
                self._selector.unregister(fd)

    def _free(self, run: LocalAttempt) -> None:
        """`run` is done with its cores and memory: they pass to the attempt held behind
        it, if any, else they are free again."""
        if run.leave_slot():
            self._cores.release(run.cores)
            self._used = Capacity(self._used.cpus - run.attempt.cpu, self._used.memory_mib - run.attempt.memory_mib)

    # -- stopping -------------------------------------------------------------------
    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str, force: bool = False) -> None:
        now = time.monotonic()
        for job_id, attempt in keys:
            run = self._running.get(job_id)
            if run is None or run.attempt.attempt != attempt:
                continue
            if not run.stop_reason:
                run.stop_reason, run.stop_code = reason, reason_codes.CANCELLED
                self._terminate(run, now)
            if run.held and not run.withdrawing:
                run.ask_back()
            if force and not run.killed:
                run.kill()

    def _terminate(self, run: LocalAttempt, now: float) -> None:
        run.terminate(now, sandboxed=self.isolation.bwrap is not None, grace=self.grace)

    # -- waiting --------------------------------------------------------------------
    def wake_up(self) -> WakeUp:
        """The attempts' output pipes and pidfds, and the next deadline (a timeout, the
        end of a grace, a leader without a pidfd to look at again)."""
        fds = (*self._selector.get_map(), *self._launchers.fds()) if self._running else ()
        return WakeUp(fds=fds, within=self._wait_time(math.inf))

    def collect(self) -> list[Report]:
        events = self._selector.select(0) if self._running else []
        for key, _ in events:
            if isinstance(key.data, tuple) and key.data[1] in self._running:
                self._drain(self._running[key.data[1]])
        self._launchers.pump()
        now = time.monotonic()
        outcomes: list[Report] = []
        for job_id, run in list(self._running.items()):
            if not run.announced:
                ask_back_at = run.ask_back_at()
                if ask_back_at is not None and now >= ask_back_at:
                    run.ask_back()
                if not run.popen.answered:
                    continue
                outcomes.append(self._answered(run, run.popen))
                if job_id not in self._running:
                    continue
            if run.returncode is None:
                reaped = reap(run.popen)
                if reaped is not None:
                    run.returncode, run.rusage, run.ended, run.ended_wall = reaped
                if isinstance(run.popen, Launched) and run.popen.lost and not run.stop_reason:
                    run.stop_reason, run.stop_code = LOST, reason_codes.INTERNAL_ERROR
                if run.returncode is not None and run.pidfd is not None:
                    self._selector.unregister(run.pidfd)
                    os.close(run.pidfd)
                    run.pidfd = None
            if run.returncode is None and not run.stop_reason and now >= run.deadline:
                run.stop_reason, run.stop_code = f"timed out after {run.attempt.timeout_seconds} s", reason_codes.TIMEOUT
                self._terminate(run, now)
            if run.term_at is not None and not run.killed and now >= run.term_at + self.grace:
                run.kill()
            if run.returncode is None:
                continue
            # In a sandbox nothing can be left: its PID namespace died with bubblewrap.
            if self.isolation.bwrap is None and group_alive(run.pgid):
                # The program is done but left processes behind: stop them too.
                self._terminate(run, now)
                continue
            self._drain(run, everything=True)
            del self._running[job_id]
            outcomes.append(self._finish(run))
        if self._leftover_cgroups:
            self._remove_cgroup(None)  # processes that were still dying a moment ago
        return outcomes

    def _drain(self, run: LocalAttempt, *, everything: bool = False) -> None:
        """Move the attempt's output into its log; past the cap, stop it (`log over N
        MiB`). `everything`: it is gone, read what is left and close the pipe."""
        output = run.output
        if output.read_fd is None:
            return
        if output.drain(everything=everything) and not run.stop_reason:
            run.stop_reason = output.failed or f"log over {attempt_logs.human_size(self.log_max_bytes)}"
            run.stop_code = reason_codes.INTERNAL_ERROR if output.failed else reason_codes.LOG_LIMIT
            self._terminate(run, time.monotonic())
        if output.ended or everything:
            self._selector.unregister(output.read_fd)
            output.close_pipe()

    def _wait_time(self, timeout: float) -> float:
        now = time.monotonic()
        wait = timeout
        for run in self._running.values():
            ask_back_at = run.ask_back_at()
            if ask_back_at is not None:
                wait = min(wait, max(0.0, ask_back_at - now))
            if (run.pidfd is None and not isinstance(run.popen, Launched)) or run.returncode is not None:
                wait = min(wait, _DRAIN_POLL)
            wait = min(wait, max(0.0, run.deadline - now))
            if run.term_at is not None and not run.killed:
                wait = min(wait, max(0.0, run.term_at + self.grace - now))
        return wait

    def _finish(self, run: LocalAttempt) -> Outcome:
        self._free(run)
        attempt = run.attempt
        results = task_spec.read_results(task_spec.local_results(run.workdir)) if attempt.task is not None else None
        if attempt.task is not None:
            task_spec.release(run.workdir)
        if not self.keep_work_dirs:
            self._remover.remove(run.workdir)
        end = run.end(sandboxed=self.isolation.bwrap is not None, log_path=self.log_store.path(attempt.log_id))
        self._remove_cgroup(run.cgroup)
        run.output.close()
        if attempt.task is not None:
            return task_spec.task_outcome(describe(end), results=results)
        return describe(end)

    def _remove_cgroup(self, cgroup: AttemptCgroup | None) -> None:
        pending = [*self._leftover_cgroups, *([cgroup] if cgroup else [])]
        self._leftover_cgroups = [group for group in pending if not group.remove()]

    def forget(self, keys: list[tuple[str, int]]) -> None:
        for job_id, attempt in keys:
            run = self._running.get(job_id)
            if run is None or run.attempt.attempt != attempt:
                continue
            del self._running[job_id]
            self._unwatch(run)
            self._free(run)

    def shutdown(self, *, grace: float, reason: str = "worker stopped") -> list[Outcome]:
        outcomes = super().shutdown(grace=grace, reason=reason)
        deadline = time.monotonic() + 2.0
        while self._leftover_cgroups and time.monotonic() < deadline:
            self._remove_cgroup(None)
            time.sleep(0.02)
        self._remover.flush()
        self._launchers.close()
        return outcomes

    # -- after a crash --------------------------------------------------------------
    def recover(self, *, is_dead: Callable[[str], bool]) -> int:
        """Kill every process on this machine that carries the BATCH_WORKER_ID of a dead
        worker (its job's process group with it)."""
        by_worker: dict[str, list[int]] = {}
        for pid, worker_id in processes_with_env("BATCH_WORKER_ID").items():
            if worker_id != self.worker_id:
                by_worker.setdefault(worker_id, []).append(pid)
        killed = 0
        for worker_id, pids in by_worker.items():
            if is_dead(worker_id):
                killed += kill_processes(pids)
        if self.isolation.cgroups is not None:
            self.isolation.cgroups.remove_stale()
        return killed
