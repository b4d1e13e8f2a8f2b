"""How a cluster executor stops its tasks: the cancels and signals asked for, sent to the
scheduler in as few commands as it can, and the running tasks it signalled followed
until they end. A running task's job script is signalled and gives its program the
kill grace; a task still queued (or not known to run yet) is cancelled at once, and so
is a signalled one still there `_CANCEL_BACKSTOP` seconds past the grace."""

import logging
import time
from collections.abc import Mapping

from jobs.executors.cluster_folders import Task
from jobs.executors.cluster_scheduler import Scheduler, SchedulerUnavailable

logger = logging.getLogger("jobs.executors.cluster")

_CANCEL_BACKSTOP = 30.0  # seconds past the grace after which a signalled task is cancelled


class Stops:
    """The stops one executor has asked for and not yet sent, by the tasks' external ids."""

    def __init__(self, *, kill_grace: float) -> None:
        self.kill_grace = kill_grace
        self._to_cancel: set[str] = set()
        self._to_signal: set[str] = set()
        self._stopping: dict[str, Task] = {}  # signalled running tasks, by job id, until they end

    def ask(self, task: Task, *, reason: str, force: bool, now: float) -> None:
        """Stop `task` for `reason` (`force`: cancelled at once, without the grace). A
        task of a submission the scheduler has not acknowledged is stopped once it has
        (`acknowledged`)."""
        task.cancel_reason = task.cancel_reason or reason
        task.cancel_at = task.cancel_at if task.cancel_at is not None else now
        if not task.submission.array_id:
            return
        if task.shown == "running" and not force:
            self._to_signal.add(task.external_id)
            self._stopping[task.job_id] = task
        else:
            self._stopping.pop(task.job_id, None)
            self._to_cancel.add(task.external_id)

    def acknowledged(self, task: Task) -> None:
        """`task`'s submission now has its array id: cancel it if it was asked to stop."""
        if task.cancel_reason:
            self._to_cancel.add(task.external_id)

    def ended(self, job_id: str) -> None:
        self._stopping.pop(job_id, None)

    def send(self, scheduler: Scheduler, *, live: Mapping[str, Task]) -> None:
        """Send what is asked (`live`: the executor's open tasks, by job id). What the
        scheduler did not get is sent again at the next call."""
        backstop = time.monotonic() - self.kill_grace - _CANCEL_BACKSTOP
        for job_id, task in list(self._stopping.items()):
            if live.get(job_id) is not task:
                del self._stopping[job_id]  # it ended
            elif task.cancel_at is not None and task.cancel_at < backstop:
                del self._stopping[job_id]
                self._to_cancel.add(task.external_id)
        try:
            if self._to_signal:
                scheduler.signal_batch(external_ids=sorted(self._to_signal))
                self._to_signal.clear()
            if self._to_cancel:
                scheduler.cancel(external_ids=sorted(self._to_cancel))
                self._to_cancel.clear()
        except SchedulerUnavailable as exc:
            logger.warning("cancelling failed (%s); trying again", exc)
