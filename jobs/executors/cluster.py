"""What any cluster backend needs, whatever its scheduler: attempts become tasks of
array submissions in a shared folder (`cluster_folders`), followed until each has
ended, reported once per change, never submitted twice, and adopted by the next worker
from the manifests.

A backend is a subclass (`SlurmExecutor`; the tests' fake cluster) that says how to
prepare a submission's folder (`prepare`) and how to hand it to its scheduler
(`send_array`), and gives a `scheduler` (`cluster_scheduler.Scheduler`) that answers
`tasks(names=...)` with each task's state and its `Phase`, `cancel`, `signal_batch`
and `ping`, and tells what an ended task's state means (`describe_end`).

A start or an end comes from the status files as soon as the node writes them, and
from the scheduler every `poll_seconds`: a waiting task is a `Queued` report with the
scheduler's reason, a placed one a placed `Queued`, a running one a start, an ended one
the outcome its adapter describes. A task the scheduler has forgotten is settled from
its exit-status file, never left running. Stopping tasks is `cluster_stops`'.

Never twice: the manifest is written before the submission is sent. If the answer is
lost, the submission is looked up by name before anything is sent again; it is sent
again only once the scheduler answers twice, some seconds apart, that it knows no such
job and no task of it has started. While the scheduler does not answer, nothing new is
claimed (`free()` is empty) and waiting attempts say so in their reason; an idle
executor pings every few seconds to know.

Attempts outlive the worker (`attempts_survive_worker`): a stopping worker leaves them
to the scheduler, and the next worker adopts them (`Adopts`).
"""

import logging
import math
import time
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from core.ids import uuid7
from core.reason_codes import CANCELLED, INTERNAL_ERROR, LAUNCH_FAILED, NOT_SUBMITTED
from jobs.executors.base import (
    UNBOUNDED,
    Adopts,
    AttemptSpec,
    Capacity,
    Executor,
    LiveAttempt,
    Outcome,
    Report,
    WakeUp,
    internal_error,
)
from jobs.executors.cluster_folders import Submission, Task, find_in_manifests, remove_old_folders
from jobs.executors.cluster_outcomes import End, outcome
from jobs.executors.cluster_reports import progress, started, waiting
from jobs.executors.cluster_scheduler import Phase, Scheduler, SchedulerRefused, SchedulerUnavailable, TaskState
from jobs.executors.cluster_stops import Stops

logger = logging.getLogger("jobs.executors.cluster")

_FILES_EVERY = 0.1  # seconds between reads of the status files
_LOST_ANSWER_WAIT = 2.0  # seconds before a submission not found is sent again
_EXIT_WAIT = 3.0  # seconds an exit file with a signal waits for the scheduler's word on why
_IDLE_PING = 5.0  # seconds between pings with nothing submitted or no answer
_CLEANUP_EVERY = 60.0  # seconds between removals of old submission folders


class ClusterExecutor(Executor, Adopts):
    """Attempts as tasks of array submissions; see the module."""

    queues_work = True
    attempts_survive_worker = True
    scheduler_name: ClassVar[str] = "the scheduler"  # in messages: "Slurm"
    runs_tasks: ClassVar[bool] = False  # whether its prepare() runs a task's runner (jobs.executors.task_spec) on the nodes

    scheduler: Scheduler
    dir: Path

    def __init__(
        self, *, root: Path, capacity: Capacity, scheduler: Scheduler, max_in_flight: int, poll_seconds: float, kill_grace: float
    ) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_store.directory.mkdir(parents=True, exist_ok=True)
        self.scheduler = scheduler
        self._capacity = capacity
        self.max_in_flight = max_in_flight
        self.poll_seconds = poll_seconds
        self.kill_grace = kill_grace
        self._tasks: dict[str, Task] = {}
        self._submissions: dict[str, Submission] = {}
        self._stops = Stops(kill_grace=kill_grace)
        self._unreachable = ""
        self._next_files = 0.0
        self._next_controller = 0.0
        self._next_cleanup = 0.0

    # -- what the backend does ----------------------------------------------------------
    @abstractmethod
    def prepare(self, specs: list[AttemptSpec], *, token: str) -> tuple[Submission | None, list[Outcome]]:
        """Write the folder of one submission for `specs` (attempts of one batch), named
        by `token`, with a task per attempt it can run; the outcomes of those it cannot
        (no job account, a program missing). May raise: the group then fails."""

    @abstractmethod
    def send_array(self, submission: Submission, *, indexes: list[int]) -> str:
        """Hand the tasks `indexes` of `submission` to the scheduler; the array's id.
        Raises SchedulerUnavailable (no answer: it may have arrived) or SchedulerRefused."""

    # -- capacity -----------------------------------------------------------------------
    def capacity(self) -> Capacity:
        return self._capacity

    def free(self) -> Capacity:
        """Cores of attempts the worker may still hand over (`max_in_flight` bounds what
        is in the scheduler's hands); the scheduler queues what does not fit, and this
        executor has no figure for memory (UNBOUNDED). Nothing while it does not answer."""
        if self._unreachable:
            return Capacity(0, 0)  # claim nothing more while the scheduler is away
        in_flight = sum(task.cpu for task in self._tasks.values())
        return Capacity(self.max_in_flight - in_flight, UNBOUNDED)

    def active(self) -> dict[str, int]:
        return {job_id: task.attempt for job_id, task in self._tasks.items()}

    # -- submitting ---------------------------------------------------------------------
    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        """One submission per batch among `specs` (and per memory: a retry rule may have
        raised some jobs' memory above their batch's, and a submission asks for one)."""
        reports: list[Report] = []
        groups: dict[tuple[str, int], list[AttemptSpec]] = defaultdict(list)
        for spec in specs:
            if spec.task is not None and not self.runs_tasks:
                # This backend has no way (yet) to run a task's runner on its nodes.
                reason = f"a task's steps run on local workers and Slurm, not on {self.scheduler_name} (yet): ask your operator"
                reports.append(Outcome(spec.job_id, spec.attempt, succeeded=False, reason=reason, reason_code=LAUNCH_FAILED))
                continue
            groups[(spec.batch_id, spec.memory_mib)].append(spec)
        for group in groups.values():
            try:
                submission, refused = self.prepare(group, token=uuid7().hex)
            except Exception as exc:  # an unwritable shared folder...: these attempts fail, not the worker
                logger.exception("cannot prepare a %s submission for batch %s", self.scheduler_name, group[0].batch_id)
                reason = internal_error(exc)
                reports.extend(Outcome(s.job_id, s.attempt, succeeded=False, reason=reason, reason_code=INTERNAL_ERROR) for s in group)
                continue
            reports.extend(refused)
            if submission is None or not submission.tasks:
                continue
            self._track(submission)
            reports.extend(self._send(submission, indexes=sorted(submission.tasks)))
        return reports

    def _track(self, submission: Submission) -> None:
        self._submissions[submission.token] = submission
        for task in submission.tasks.values():
            self._tasks[task.job_id] = task
        # An idle executor pinged slowly; a new submission is asked after at the usual pace.
        self._next_controller = min(self._next_controller, time.monotonic() + self.poll_seconds)

    def _send(self, submission: Submission, *, indexes: list[int]) -> list[Report]:
        """Send the tasks `indexes` of `submission`. What is known comes back: nothing
        when the scheduler took it (the next collect tells its state), outcomes when it
        refused, `Queued` reports when it did not answer."""
        name = self.scheduler_name
        if self._unreachable:  # don't wait for another timeout: it goes out once the scheduler answers
            submission.lost_since = -math.inf
            return waiting(submission.tasks.values(), f"{name} controller unreachable ({self._unreachable}); the submission waits")
        try:
            array_id = self.send_array(submission, indexes=indexes)
        except SchedulerUnavailable as exc:
            # It may have reached the scheduler all the same: it is looked up (at the
            # next collect) before anything is sent again.
            submission.lost_since = time.monotonic()
            self._unreachable = str(exc)
            logger.warning("sending %s got no answer (%s); it will be looked up before anything is sent again", submission.name, exc)
            return waiting(submission.tasks.values(), f"no answer from the {name} controller ({exc}); the submission waits")
        except SchedulerRefused as exc:
            found = self._look_up(submission)
            if found is None:
                logger.error("%s refused %s: %s", name, submission.name, exc)
                end = End(False, None, f"{name} refused the job: {exc}", LAUNCH_FAILED)
                return [self._finish(task, end) for task in list(submission.tasks.values())]
            array_id = found
        self._confirm(submission, array_id)
        return []

    def _look_up(self, submission: Submission) -> str | None:
        """The array id of `submission` if the scheduler knows it, else None (unknown,
        or the scheduler does not answer)."""
        try:
            states = self.scheduler.tasks(names=[submission.name])
        except (SchedulerUnavailable, SchedulerRefused):
            return None
        return states[0].array_id if states else None

    def _confirm(self, submission: Submission, array_id: str) -> None:
        submission.record_array_id(array_id)
        for task in submission.tasks.values():
            self._stops.acknowledged(task)

    # -- following ----------------------------------------------------------------------
    def wake_up(self) -> WakeUp:
        """No descriptor: the status files are read, and the scheduler asked, on a timer."""
        due = min(self._next_files if self._submissions else math.inf, self._next_controller, self._next_cleanup)
        return WakeUp(within=max(0.0, due - time.monotonic()))

    def collect(self) -> list[Report]:
        now = time.monotonic()
        reports: list[Report] = []
        self._flush_cancels()
        if now >= self._next_files:
            reports.extend(self._read_files(now))
            self._next_files = now + _FILES_EVERY
        if now >= self._next_controller:
            # An idle worker pings too: one whose last task ended just before the
            # scheduler went away must not offer its room (free()) to new work.
            reports.extend(self._ask_controller(now) if self._submissions else self._ping())
            slow = self._unreachable or not self._submissions
            self._next_controller = now + (max(self.poll_seconds, _IDLE_PING) if slow else self.poll_seconds)
        if now >= self._next_cleanup:
            remove_old_folders(root=self.dir)
            self._next_cleanup = now + _CLEANUP_EVERY
        return reports

    def _read_files(self, now: float) -> list[Report]:
        """Starts and ends that the nodes have written. Not yet for a submission whose
        sending got no answer: it is looked up first (`_ask_controller`), so that what is
        recorded of its tasks carries their scheduler ids; one the scheduler has
        forgotten is settled from these files then (`_not_submitted`)."""
        reports: list[Report] = []
        for submission in list(self._submissions.values()):
            if not submission.array_id:
                continue
            names = submission.listing()
            for task in list(submission.tasks.values()):
                if task.shown != "running" and f"{task.index}.start" in names:
                    reports.append(started(task, node=""))
                if f"{task.index}.exit" not in names:
                    continue
                status = task.status("exit")
                if status is None:
                    continue
                # A clean exit or our own timeout says all; a signal waits a little for
                # the scheduler to say why (time limit, memory, preemption, cancel).
                plain = isinstance(status.get("code"), int) or status.get("timed_out") or status.get("log_over") or status.get("error")
                if plain or task.cancel_reason:
                    state = self.scheduler.state_after_exit(code=status.get("code"))
                    reports.append(self._end(task, state=state, status=status))
                elif task.exit_seen is None:
                    task.exit_seen = now
                elif now - task.exit_seen > _EXIT_WAIT:
                    reports.append(self._end(task, state=None, status=status))
        return reports

    def _controller_answered(self, problem: Exception | None) -> None:
        """Note whether the scheduler answered the last command, saying so when that
        changes. While it does not, nothing is claimed or sent."""
        if problem is not None and not self._unreachable:
            logger.warning("%s controller unreachable: %s", self.scheduler_name, problem)
        elif problem is None and self._unreachable:
            logger.warning("%s controller answers again", self.scheduler_name)
        self._unreachable = str(problem) if problem is not None else ""

    def _ping(self) -> list[Report]:
        """With nothing to follow: is the scheduler back?"""
        try:
            self.scheduler.ping()
        except (SchedulerUnavailable, SchedulerRefused) as exc:
            self._controller_answered(exc)
            return []
        self._controller_answered(None)
        return []

    def _ask_controller(self, now: float) -> list[Report]:
        try:
            states = self.scheduler.tasks(names=[s.name for s in self._submissions.values()])
        except (SchedulerUnavailable, SchedulerRefused) as exc:
            self._controller_answered(exc)
            return waiting(list(self._tasks.values()), f"{self.scheduler_name} controller unreachable ({exc}); state unknown")
        self._controller_answered(None)
        by_task: dict[tuple[str, int], TaskState] = {(state.name, state.index): state for state in states}
        reports: list[Report] = []
        for submission in list(self._submissions.values()):
            if not submission.array_id:
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
        if state is None:  # forgotten by the scheduler: what did the node write?
            return [self._end(task, state=None, status=task.status("exit"))]
        if state.phase not in (Phase.COMPLETED, Phase.ENDED):
            return progress(task, state)
        status = task.status("exit")
        if status is None and state.phase is Phase.COMPLETED and task.exit_seen is None:
            task.exit_seen = time.monotonic()  # the shared filesystem may show it a moment later
            return []
        reports: list[Report] = []
        if task.shown != "running" and task.submission.has(task.index, "start"):
            reports.append(started(task, node=state.nodes))
        reports.append(self._end(task, state=state.state, status=status))
        return reports

    def _not_submitted(self, submission: Submission, now: float) -> list[Report]:
        """A submission whose sending got no answer, which the scheduler does not list."""
        submission.not_found += 1
        if submission.lost_since is None or submission.not_found < 2 or now - submission.lost_since < _LOST_ANSWER_WAIT:
            return []
        cancelled = [task for task in submission.tasks.values() if task.cancel_reason]
        reports: list[Report] = [self._finish(task, End(False, None, task.cancel_reason, CANCELLED)) for task in cancelled]
        if any(submission.has(index, "start") for index in submission.tasks):
            # It ran, and the scheduler has forgotten it: settle from the files.
            return reports + [self._end(task, state=None, status=task.status("exit")) for task in list(submission.tasks.values())]
        if submission.tasks:
            logger.warning("%s never reached %s; sending it again", submission.name, self.scheduler_name)
            reports.extend(self._send(submission, indexes=sorted(submission.tasks)))
        return reports

    def _end(self, task: Task, *, state: str | None, status: dict | None) -> Outcome:
        end = self.scheduler.describe_end(
            state=state, status=status, timeout=task.timeout, memory_mib=task.memory_mib, cancel_reason=task.cancel_reason
        )
        return self._finish(task, end, status=status)

    def _finish(self, task: Task, end: End, *, status: dict | None = None) -> Outcome:
        """The task's Outcome (`end`, with what the node measured in `status`), and the
        task forgotten."""
        submission = task.submission
        submission.tasks.pop(task.index, None)
        if self._tasks.get(task.job_id) is task:
            del self._tasks[task.job_id]
        self._stops.ended(task.job_id)
        if not submission.tasks:
            self._submissions.pop(submission.token, None)
            submission.mark_done()
        return outcome(task, end, status=status, runs_tasks=self.runs_tasks)

    # -- stopping -----------------------------------------------------------------------
    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str, force: bool = False) -> None:
        """Cancel the attempts, in as few calls as possible (`cluster_stops`); each
        outcome follows from collect. A running task's script is signalled and gives its
        program the kill grace (`force`: cancelled at once); a submission still being
        looked up is cancelled once found (or never sent)."""
        now = time.monotonic()
        for job_id, attempt in keys:
            task = self._tasks.get(job_id)
            if task is None or task.attempt != attempt or (task.cancel_reason and not force):
                continue
            self._stops.ask(task, reason=reason, force=force, now=now)
        self._flush_cancels()

    def _flush_cancels(self) -> None:
        # While the scheduler is away, one command per collect asks whether it is back:
        # a cancel that would wait its whole timeout too could hold the worker past its
        # heartbeat.
        if not self._unreachable:
            self._stops.send(self.scheduler, live=self._tasks)

    def forget(self, keys: list[tuple[str, int]]) -> None:
        for job_id, attempt in keys:
            task = self._tasks.get(job_id)
            if task is not None and task.attempt == attempt:
                self._finish(task, End(False, None, "forgotten", INTERNAL_ERROR))

    # -- taking over --------------------------------------------------------------------
    def adopt(self, attempts: list[LiveAttempt]) -> list[Report]:
        """Follow the live attempts a stopped or lost worker left: each is found in the
        manifests of the shared folder. One that is in none was never sent: it is
        reported ended, not charged, and runs again."""
        wanted = {(a.job_id, a.attempt): a for a in attempts if a.job_id not in self._tasks}
        found = find_in_manifests(root=self.dir, keys=set(wanted))
        reports: list[Report] = []
        for key, attempt in wanted.items():
            if key not in found:
                reason = f"never reached {self.scheduler_name}"
                reports.append(Outcome(attempt.job_id, attempt.attempt, succeeded=False, reason=reason, reason_code=NOT_SUBMITTED))
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
        if not submission.array_id:
            submission.lost_since = -math.inf  # its answer was lost with the worker: look it up
        self._submissions[token] = submission
        return submission
