"""How a task's state is told in TES terms, from its job, one way (README, "TES"):

SUBMITTED, PENDING, RUNNABLE          -> QUEUED
STARTING                              -> INITIALIZING
RUNNING                               -> RUNNING
any of those with a cancel requested  -> CANCELING
SUCCEEDED                             -> COMPLETE
FAILED, cancelled                     -> CANCELED
FAILED by the task's own commands     -> EXECUTOR_ERROR  (a step's exit code or signal)
FAILED otherwise                      -> SYSTEM_ERROR    (an input or output not staged,
                                                          its limits, a lost worker...)
"""

from django.db.models import Q

from core import reason_codes
from jobs.statuses import CANCELLED_REASON, Status

WAITING = (Status.SUBMITTED, Status.PENDING, Status.RUNNABLE)
UNFINISHED = (*WAITING, Status.STARTING, Status.RUNNING)
EXECUTOR_CODES = (reason_codes.EXIT_CODE, reason_codes.SIGNAL)
STATES = (
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
    "CANCELING",
)


def tes_state(*, status: str, cancel_requested: bool, reason: str, reason_code: str | None) -> str:
    """The TES state of a task whose job has `status` (see the module)."""
    if status in UNFINISHED:
        if cancel_requested:
            return "CANCELING"
        return {Status.STARTING: "INITIALIZING", Status.RUNNING: "RUNNING"}.get(status, "QUEUED")
    if status == Status.SUCCEEDED:
        return "COMPLETE"
    if cancel_requested or reason == CANCELLED_REASON or reason_code == reason_codes.CANCELLED:
        return "CANCELED"
    return "EXECUTOR_ERROR" if reason_code in EXECUTOR_CODES else "SYSTEM_ERROR"


def state_filter(state: str) -> Q:
    """The tasks in TES `state`, as a filter on TaskRecord annotated with `last_code`
    (the last attempt's reason code)."""
    cancelled = Q(job__cancel_requested_at__isnull=False) | Q(job__reason=CANCELLED_REASON) | Q(last_code=reason_codes.CANCELLED)
    live = Q(job__cancel_requested_at__isnull=True)
    failed = Q(job__status=Status.FAILED) & ~cancelled
    return {
        "QUEUED": Q(job__status__in=WAITING) & live,
        "INITIALIZING": Q(job__status=Status.STARTING) & live,
        "RUNNING": Q(job__status=Status.RUNNING) & live,
        "CANCELING": Q(job__status__in=UNFINISHED, job__cancel_requested_at__isnull=False),
        "COMPLETE": Q(job__status=Status.SUCCEEDED),
        "CANCELED": Q(job__status=Status.FAILED) & cancelled,
        "EXECUTOR_ERROR": failed & Q(last_code__in=EXECUTOR_CODES),
        "SYSTEM_ERROR": failed & (Q(last_code__isnull=True) | ~Q(last_code__in=EXECUTOR_CODES)),
    }.get(state, Q(pk__in=[]))
