"""The slurm executor: attempts become tasks of Slurm job arrays.

A submission is the attempts of one batch that the worker starts together: one `sbatch
--array=0-N` with the batch's hardware (`--cpus-per-task`, `--mem`, a `--time` a little
longer than the batch's timeout, `--no-requeue`, the partition and account of the
settings). Its folder in the shared `BATCHES_SLURM_DIR` holds a manifest (which job and
attempt each task is), one task file per attempt (argv, environment, log file, timeout),
and what the tasks write on the nodes: `<i>.start` and `<i>.exit`. The job script is
`slurm_task.py`, standard library only.

What is known, and from where:
- the external id of an attempt is `<array job id>_<index>`, as squeue and scancel
  name it; the submission is named `batches-<token>` (its folder's name);
- a start or an end comes from the status files as soon as the node writes them, and
  from the controller (squeue) every `BATCHES_SLURM_POLL_MS`: PENDING is a `Queued`
  report with Slurm's reason, CONFIGURING a placed one, RUNNING a start, and an ended
  state (COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, CANCELLED...) an outcome
  told by `slurm_outcomes.describe_end`. A task the controller has forgotten is settled
  from its exit-status file, never left running.

Never twice: the manifest is written before sbatch. If sbatch's answer is lost (it
timed out, the controller went away mid-call), the submission is looked up by name
before anything is sent again; it is sent again only once the controller answers twice,
some seconds apart, that it knows no such job and no task of it has started. A worker
that takes over (`adopt`) finds its attempts' submissions from the manifests, with or
without an external id recorded. While the controller does not answer, nothing new is
claimed (`free()` is empty) and waiting attempts say so in their reason; an idle
executor pings the controller every few seconds to know.

Attempts outlive the worker (`attempts_survive_worker`): a stopping worker leaves them
to Slurm, and the next worker adopts them.

Sealed (`slurm_sealing`): each batch is submitted as its owner's job account, its tasks
run their program in bubblewrap, and Slurm's cgroup plugins hold memory, cores and
processes; the worker reports which parts the cluster enforces. Cancelling a running
task signals the task script alone (`scancel --batch --signal=TERM`), which gives the
program its grace before killing it; a task still there long after is scancelled.
"""

import logging
import math
import select
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from django.conf import settings

from core.ids import uuid7
from jobs.executors.base import AttemptSpec, Capacity, Executor, LiveAttempt, Outcome, Queued, Report, Started, internal_error
from jobs.executors.environment import job_environment
from jobs.executors.isolation import SECCOMP, JobUser, NoJobAccount
from jobs.executors.slurm_commands import SlurmCommands, SlurmRefused, SlurmUnavailable, TaskState
from jobs.executors.slurm_folders import STATUS, Submission, Task, array_ranges, find_in_manifests, remove_old_folders, write_script
from jobs.executors.slurm_outcomes import ENDED, PLACED, RUNNING, WAITING, describe_end
from jobs.executors.slurm_sealing import SANDBOX_WORKDIR, SECCOMP_FILE, prepare_folders, probe_cluster, seal_submission, sealed_argv
from jobs.logs import log_path

logger = logging.getLogger("jobs.executors.slurm")

_FILES_EVERY = 0.1  # seconds between reads of the status files
_LOST_ANSWER_WAIT = 2.0  # seconds before a submission not found is sent again
_EXIT_WAIT = 3.0  # seconds an exit file with a signal waits for Slurm's word on why
_READY_CACHE = 5.0
_IDLE_PING = 5.0  # seconds between pings with nothing submitted or no answer
_CANCEL_BACKSTOP = 30.0  # seconds past the grace after which a signalled task is scancelled


def commands_from_settings() -> SlurmCommands:
    return SlurmCommands(bin_dir=settings.BATCHES_SLURM_BIN, timeout=float(settings.BATCHES_SLURM_COMMAND_TIMEOUT))


class SlurmExecutor(Executor):
    kind = "slurm"
    queues_work = True
    attempts_survive_worker = True

    _ready: tuple[float, str | None] = (-math.inf, None)

    def __init__(self, *, worker_id: str = "", cpus: int | None = None, memory_mib: int | None = None, **_: object) -> None:
        self.worker_id = worker_id
        self.commands = commands_from_settings()
        self.dir = settings.BATCHES_SLURM_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        settings.BATCHES_LOG_DIR.mkdir(parents=True, exist_ok=True)
        self._capacity = self._largest_job(cpus, memory_mib)
        self._tasks: dict[str, Task] = {}
        self._submissions: dict[str, Submission] = {}
        self._to_cancel: set[str] = set()
        self._unreachable = ""
        self._next_files = 0.0
        self._next_controller = 0.0
        self._next_cleanup = 0.0
        self._script = write_script(root=self.dir, python=settings.BATCHES_SLURM_PYTHON)
        self._to_signal: set[str] = set()
        self._stopping: dict[str, Task] = {}  # signalled running tasks, by job id, until they end
        self.isolation = probe_cluster(self.commands)
        if self.isolation.switch_users:
            prepare_folders(root=self.dir, log_dir=settings.BATCHES_LOG_DIR)

    def _largest_job(self, cpus: int | None, memory_mib: int | None) -> Capacity:
        if cpus and memory_mib:
            return Capacity(cpus, memory_mib)
        try:
            node_cpus, node_memory = self.commands.largest_node(partition=settings.BATCHES_SLURM_PARTITION)
        except (SlurmUnavailable, SlurmRefused) as exc:
            logger.warning("cannot ask Slurm for its largest node (%s); using BATCHES_MAX_CPU and BATCHES_MAX_MEMORY_MIB", exc)
            node_cpus, node_memory = settings.BATCHES_MAX_CPU, settings.BATCHES_MAX_MEMORY_MIB
        return Capacity(cpus or node_cpus, memory_mib or node_memory)

    def capacity(self) -> Capacity:
        return self._capacity

    def free(self) -> Capacity:
        if self._unreachable:
            return Capacity(0, 0)  # claim nothing more while the controller is away
        in_flight = sum(task.cpu for task in self._tasks.values())
        room = settings.BATCHES_SLURM_MAX_SUBMITTED - in_flight
        return Capacity(room, room * self._capacity.memory_mib)

    def active(self) -> dict[str, int]:
        return {job_id: task.attempt for job_id, task in self._tasks.items()}

    def runs_as_root_problem(self, *, accounts_exist: bool) -> str:
        return self.isolation.root_problem(accounts_exist=accounts_exist, verb="submit")

    # -- submitting -------------------------------------------------------------------
    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        """One sbatch --array per batch among `specs`."""
        reports: list[Report] = []
        groups: dict[str, list[AttemptSpec]] = defaultdict(list)
        for spec in specs:
            groups[spec.batch_id].append(spec)
        for group in groups.values():
            try:
                user = self.isolation.account_for(group[0].run_as, group[0].run_as_uid)
            except NoJobAccount as exc:
                reports.extend(Outcome(s.job_id, s.attempt, succeeded=False, reason=str(exc)) for s in group)
                continue
            argvs: dict[str, list[str]] = {}
            for spec in group:
                filesystems = [(path, name in spec.read_only) for name, path in spec.filesystems.items()]
                try:
                    argvs[spec.job_id] = sealed_argv(
                        self.isolation, argv=spec.argv, filesystems=filesystems, memory_bytes=spec.memory_mib << 20
                    )
                except FileNotFoundError as exc:
                    reason = f"could not start {spec.argv[0]}: {exc.strerror or exc}"
                    reports.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=reason))
            group = [spec for spec in group if spec.job_id in argvs]
            if not group:
                continue
            try:
                submission = self._prepare(group, argvs=argvs, user=user)
            except Exception as exc:  # an unwritable shared folder...: these attempts fail, not the worker
                logger.exception("cannot prepare a Slurm submission for batch %s", group[0].batch_id)
                reports.extend(Outcome(s.job_id, s.attempt, succeeded=False, reason=internal_error(exc)) for s in group)
                continue
            reports.extend(self._send(submission, indexes=sorted(submission.tasks)))
        return reports

    def _prepare(self, specs: list[AttemptSpec], *, argvs: dict[str, list[str]], user: JobUser | None) -> Submission:
        token = uuid7().hex
        sandboxed = self.isolation.bwrap is not None
        tasks = [
            {
                "job_id": spec.job_id,
                "attempt": spec.attempt,
                "argv": argvs[spec.job_id],
                "env": job_environment(spec, worker_id=self.worker_id, workdir=SANDBOX_WORKDIR if sandboxed else None),
                "log": str(log_path(spec.log_id)),
                "timeout": spec.timeout_seconds,
                "work_root": settings.BATCHES_SLURM_NODE_WORK_DIR,
                "sandboxed": sandboxed,
                "log_max_bytes": settings.BATCHES_LOG_MAX_BYTES,
                "grace": settings.BATCHES_KILL_GRACE_SECONDS,
                "max_processes": settings.BATCHES_JOB_MAX_PROCESSES if sandboxed else 0,
                "seccomp": str(self.dir / token / SECCOMP_FILE) if sandboxed and SECCOMP is not None else "",
            }
            for spec in specs
        ]
        options = self._options(specs[0], self.dir / token, token)
        if user is not None:
            options += [f"--uid={user.uid}", f"--gid={user.gid}"]
        submission = Submission.create(root=self.dir, token=token, options=options, tasks=tasks)
        seal_submission(
            folder=submission.folder, log_files=[Path(task["log"]) for task in tasks], user=user, log_dir=settings.BATCHES_LOG_DIR
        )
        for index, spec in enumerate(specs):
            submission.tasks[index] = Task(spec.job_id, spec.attempt, index, submission, spec.timeout_seconds, spec.memory_mib, spec.cpu)
        self._track(submission)
        return submission

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

    def _track(self, submission: Submission) -> None:
        self._submissions[submission.token] = submission
        for task in submission.tasks.values():
            self._tasks[task.job_id] = task
        # An idle executor pinged slowly; a new submission is asked after at the usual pace.
        self._next_controller = min(self._next_controller, time.monotonic() + settings.BATCHES_SLURM_POLL_MS / 1000)

    def _send(self, submission: Submission, *, indexes: list[int]) -> list[Report]:
        """sbatch the tasks `indexes` of `submission`. What is known comes back: nothing
        when Slurm took it (the next poll tells its state), outcomes when it refused,
        `Queued` reports when the controller did not answer."""
        throttle = settings.BATCHES_SLURM_ARRAY_THROTTLE
        array = array_ranges(indexes) + (f"%{throttle}" if throttle else "")
        if self._unreachable:  # don't wait for another timeout: it goes out once the controller answers
            submission.lost_since = -math.inf
            return self._waiting(submission.tasks.values(), f"Slurm controller unreachable ({self._unreachable}); the submission waits")
        try:
            slurm_id = self.commands.submit(
                options=[f"--array={array}", *submission.options], script=str(self._script), script_args=[str(submission.folder)]
            )
        except SlurmUnavailable as exc:
            # It may have reached the controller all the same: it is looked up (at the
            # next poll) before anything is sent again.
            submission.lost_since = time.monotonic()
            self._unreachable = str(exc)
            logger.warning("sbatch of %s got no answer (%s); it will be looked up before anything is sent again", submission.name, exc)
            return self._waiting(submission.tasks.values(), f"no answer from the Slurm controller ({exc}); the submission waits")
        except SlurmRefused as exc:
            found = self._look_up(submission)
            if found is None:
                logger.error("Slurm refused %s: %s", submission.name, exc)
                return [self._finish(task, reason=f"Slurm refused the job: {exc}") for task in list(submission.tasks.values())]
            slurm_id = found
        self._confirm(submission, slurm_id)
        return []

    def _look_up(self, submission: Submission) -> str | None:
        """The array job id of `submission` if the controller knows it, else None
        (unknown, or the controller does not answer)."""
        try:
            states = self.commands.tasks(names=[submission.name])
        except (SlurmUnavailable, SlurmRefused):
            return None
        return states[0].array_id if states else None

    def _confirm(self, submission: Submission, slurm_id: str) -> None:
        submission.record_slurm_id(slurm_id)
        for task in submission.tasks.values():
            if task.cancel_reason:
                self._to_cancel.add(task.external_id)

    def _waiting(self, tasks: Iterable[Task], reason: str) -> list[Report]:
        reports: list[Report] = []
        for task in tasks:
            if task.shown not in ("running", f"queued:{reason}"):
                task.shown = f"queued:{reason}"
                reports.append(Queued(task.job_id, task.attempt, external_id=task.external_id, reason=reason))
        return reports

    # -- following --------------------------------------------------------------------
    def poll(self, *, timeout: float, wake_fd: int | None = None) -> list[Report]:
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            reports: list[Report] = []
            self._flush_cancels()
            if now >= self._next_files:
                reports.extend(self._read_files(now))
                self._next_files = now + _FILES_EVERY
            if now >= self._next_controller:
                # An idle worker pings too: one whose last task ended just before the
                # controller went away must not offer its room (free()) to new work.
                reports.extend(self._ask_controller(now) if self._submissions else self._ping())
                interval = settings.BATCHES_SLURM_POLL_MS / 1000
                slow = self._unreachable or not self._submissions
                self._next_controller = now + (max(interval, _IDLE_PING) if slow else interval)
            if now >= self._next_cleanup:
                remove_old_folders(root=self.dir)
                self._next_cleanup = now + 60
            if reports or now >= deadline:
                return reports
            wait = max(0.0, min(deadline, self._next_files, self._next_controller if self._submissions else deadline) - now)
            if wake_fd is not None:
                readable, _, _ = select.select([wake_fd], [], [], wait)
                if readable:
                    return []
            else:
                time.sleep(wait)

    def _read_files(self, now: float) -> list[Report]:
        """Starts and ends that the nodes have written."""
        reports: list[Report] = []
        for submission in list(self._submissions.values()):
            names = submission.listing()
            for task in list(submission.tasks.values()):
                if task.shown != "running" and f"{task.index}.start" in names:
                    reports.append(self._started(task, node=""))
                if f"{task.index}.exit" not in names:
                    continue
                status = task.status("exit")
                if status is None:
                    continue
                # A clean exit or our own timeout says all; a signal waits a little for
                # Slurm to say why (time limit, memory, preemption, scancel).
                plain = isinstance(status.get("code"), int) or status.get("timed_out") or status.get("log_over") or status.get("error")
                if plain or task.cancel_reason:
                    # The task exits with the program's status: Slurm's state is FAILED.
                    failed = isinstance(status.get("code"), int) and status["code"] > 0
                    reports.append(self._end(task, state="FAILED" if failed else None, status=status))
                elif task.exit_seen is None:
                    task.exit_seen = now
                elif now - task.exit_seen > _EXIT_WAIT:
                    reports.append(self._end(task, state=None, status=status))
        return reports

    def _controller_answered(self, problem: Exception | None) -> None:
        """Note whether the controller answered the last command, saying so when that
        changes. While it does not, nothing is claimed or sent."""
        if problem is not None and not self._unreachable:
            logger.warning("Slurm controller unreachable: %s", problem)
        elif problem is None and self._unreachable:
            logger.warning("Slurm controller answers again")
        self._unreachable = str(problem) if problem is not None else ""

    def _ping(self) -> list[Report]:
        """With nothing to follow: is the controller back?"""
        try:
            self.commands.ping()
        except (SlurmUnavailable, SlurmRefused) as exc:
            self._controller_answered(exc)
            return []
        self._controller_answered(None)
        return []

    def _ask_controller(self, now: float) -> list[Report]:
        try:
            states = self.commands.tasks(names=[s.name for s in self._submissions.values()])
        except (SlurmUnavailable, SlurmRefused) as exc:
            self._controller_answered(exc)
            return self._waiting(list(self._tasks.values()), f"Slurm controller unreachable ({exc}); state unknown")
        self._controller_answered(None)
        by_task: dict[tuple[str, int], TaskState] = {(state.name, state.index): state for state in states}
        reports: list[Report] = []
        for submission in list(self._submissions.values()):
            if not submission.slurm_id:
                found = next((s.array_id for s in states if s.name == submission.name), None)
                if found:
                    self._confirm(submission, found)
                else:
                    reports.extend(self._not_submitted(submission, now))
                    continue
            for task in list(submission.tasks.values()):
                state = by_task.get((submission.name, task.index))
                reports.extend(self._follow(task, state))
        return reports

    def _follow(self, task: Task, state: TaskState | None) -> list[Report]:
        submission = task.submission
        external_id = task.external_id
        if state is None:  # forgotten by the controller: what did the node write?
            return [self._end(task, state=None, status=task.status("exit"))]
        if state.state in WAITING:
            reason = state.reason if state.reason and state.reason != "None" else "waiting for the scheduler"
            if task.shown != f"queued:{reason}" and task.shown not in ("placed", "running"):
                task.shown = f"queued:{reason}"
                return [Queued(task.job_id, task.attempt, external_id=external_id, reason=reason)]
        elif state.state in PLACED:
            if task.shown not in ("placed", "running"):
                task.shown = "placed"
                return [Queued(task.job_id, task.attempt, external_id=external_id, placed=True, node=state.nodes)]
        elif state.state in RUNNING:
            if task.shown != "running":
                return [self._started(task, node=state.nodes)]
        elif state.state in ENDED:
            status = task.status("exit")
            if status is None and state.state == "COMPLETED" and task.exit_seen is None:
                task.exit_seen = time.monotonic()  # the shared filesystem may show it a moment later
                return []
            reports: list[Report] = []
            if task.shown != "running" and submission.has(task.index, "start"):
                reports.append(self._started(task, node=state.nodes))
            reports.append(self._end(task, state=state.state, status=status))
            return reports
        return []

    def _not_submitted(self, submission: Submission, now: float) -> list[Report]:
        """A submission whose sbatch got no answer, which the controller does not list."""
        submission.not_found += 1
        if submission.lost_since is None or submission.not_found < 2 or now - submission.lost_since < _LOST_ANSWER_WAIT:
            return []
        cancelled = [task for task in submission.tasks.values() if task.cancel_reason]
        reports: list[Report] = [self._finish(task, reason=task.cancel_reason) for task in cancelled]
        if any(submission.has(index, "start") for index in submission.tasks):
            # It ran, and the controller has forgotten it: settle from the files.
            return reports + [self._end(task, state=None, status=task.status("exit")) for task in list(submission.tasks.values())]
        if submission.tasks:
            logger.warning("%s never reached Slurm; sending it again", submission.name)
            reports.extend(self._send(submission, indexes=sorted(submission.tasks)))
        return reports

    def _started(self, task: Task, *, node: str) -> Started:
        task.shown = "running"
        start = task.status("start") or {}
        return Started(
            task.job_id,
            task.attempt,
            external_id=task.external_id,
            node=start.get("node") or node,
            log_offset=start.get("log_offset"),
        )

    def _end(self, task: Task, *, state: str | None, status: dict | None) -> Outcome:
        end = describe_end(state=state, status=status, timeout=task.timeout, memory_mib=task.memory_mib, cancel_reason=task.cancel_reason)
        return self._finish(task, reason=end.reason, succeeded=end.succeeded, exit_code=end.exit_code)

    def _finish(self, task: Task, *, reason: str, succeeded: bool = False, exit_code: int | None = None) -> Outcome:
        submission = task.submission
        submission.tasks.pop(task.index, None)
        if self._tasks.get(task.job_id) is task:
            del self._tasks[task.job_id]
        if not submission.tasks:
            self._submissions.pop(submission.token, None)
            submission.mark_done()
        return Outcome(task.job_id, task.attempt, succeeded=succeeded, exit_code=exit_code, reason=reason)

    # -- stopping ---------------------------------------------------------------------
    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str) -> None:
        """scancel the attempts, in as few calls as possible; each outcome follows from
        poll. A submission still being looked up is cancelled once found (or never sent)."""
        for job_id, attempt in keys:
            task = self._tasks.get(job_id)
            if task is None or task.attempt != attempt or task.cancel_reason:
                continue
            task.cancel_reason = reason
            task.cancel_at = time.monotonic()
            if task.submission.slurm_id:
                # A running task script stops its program with the grace; one still
                # queued (or not known to run yet) is simply removed.
                if task.shown == "running":
                    self._to_signal.add(task.external_id)
                    self._stopping[job_id] = task
                else:
                    self._to_cancel.add(task.external_id)
        self._flush_cancels()

    def _flush_cancels(self) -> None:
        # While the controller is away, one command per poll (squeue) asks whether it is
        # back: a scancel that would wait its whole timeout too could hold the worker
        # past its heartbeat.
        if self._unreachable:
            return
        backstop = time.monotonic() - settings.BATCHES_KILL_GRACE_SECONDS - _CANCEL_BACKSTOP
        for job_id, task in list(self._stopping.items()):
            if self._tasks.get(job_id) is not task:
                del self._stopping[job_id]  # it ended
            elif task.cancel_at is not None and task.cancel_at < backstop:
                del self._stopping[job_id]
                self._to_cancel.add(task.external_id)
        try:
            if self._to_signal:
                self.commands.signal_batch(external_ids=sorted(self._to_signal))
                self._to_signal.clear()
            if self._to_cancel:
                self.commands.cancel(external_ids=sorted(self._to_cancel))
                self._to_cancel.clear()
        except SlurmUnavailable as exc:
            logger.warning("scancel failed (%s); trying again", exc)

    # -- taking over ------------------------------------------------------------------
    def adopt(self, attempts: list[LiveAttempt]) -> list[Report]:
        """Follow the live attempts a stopped or lost worker left: each is found in the
        manifests of the shared folder. One that is in none was never handed to Slurm:
        it is reported ended, not charged, and runs again."""
        wanted = {(a.job_id, a.attempt): a for a in attempts if a.job_id not in self._tasks}
        found = find_in_manifests(root=self.dir, keys=set(wanted))
        reports: list[Report] = []
        for key, attempt in wanted.items():
            if key not in found:
                reports.append(Outcome(attempt.job_id, attempt.attempt, succeeded=False, reason="never reached Slurm", charged=False))
                continue
            token, index = found[key]
            submission = self._submissions.get(token) or self._load_submission(token, external_id=attempt.external_id)
            task = Task(attempt.job_id, attempt.attempt, index, submission, attempt.timeout_seconds, attempt.memory_mib, attempt.cpu)
            task.shown = "running" if attempt.running else ""
            submission.tasks[index] = task
            self._tasks[attempt.job_id] = task
        self._next_controller = 0.0  # ask about them now
        return reports

    def _load_submission(self, token: str, *, external_id: str = "") -> Submission:
        submission = Submission.load(root=self.dir, token=token, external_id=external_id)
        if not submission.slurm_id:
            submission.lost_since = -math.inf  # its answer was lost with the worker: look it up
        self._submissions[token] = submission
        return submission

    def recover(self, *, is_dead: Callable[[str], bool]) -> int:
        return 0  # a dead worker's attempts are adopted, not stopped

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
