"""What the operators' pages show of the last minutes and of a batch's failures: jobs
finished per minute, each unfinished batch's expected end, the latest failures, and a
batch's failures counted per reason.

Every read here is bounded whatever the tables' sizes: the recent activity comes from
the newest job events only (at most EVENT_WINDOW of them, found on the primary key's
index: events are written in time order), and a batch's failure reasons from at most
REASON_SAMPLE of its FAILED jobs (on the (batch, status) index)."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Subquery
from django.db.models.functions import Coalesce, TruncMinute

from jobs.models import Job, JobEvent
from jobs.statuses import Status

WINDOW = timedelta(minutes=10)
# Newest events read at most: at four events a job, 2,500 jobs ending in the window.
# Busier than that, the rates are measured over the shorter span these events cover.
EVENT_WINDOW = 10_000
RECENT_FAILURES = 10
REASON_SAMPLE = 10_000
FINISHED = (Status.SUCCEEDED, Status.FAILED)


@dataclass
class Activity:
    """The jobs that ended since `since` (`WINDOW` ago, or later when more events than
    EVENT_WINDOW came since), per minute and per batch, and the latest failures."""

    now: datetime
    since: datetime
    cover: str = ""  # why `since` is later than WINDOW ago, if it is
    per_minute: list[dict[str, Any]] = field(default_factory=list)  # minute, succeeded, failed
    per_batch: dict[Any, int] = field(default_factory=dict)  # batch id -> jobs ended
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(row["succeeded"] for row in self.per_minute)

    @property
    def failed(self) -> int:
        return sum(row["failed"] for row in self.per_minute)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def minutes(self) -> float:
        """The span the rate is measured over: at least a minute, unless the newest
        EVENT_WINDOW events came within less (six jobs in the first second of a
        deployment are not 360 a minute)."""
        span = (self.now - self.since).total_seconds() / 60
        return max(span, 1 / 60) if self.cover.startswith("the span") else max(span, 1.0)

    @property
    def per_minute_rate(self) -> float:
        return self.finished / self.minutes

    @property
    def shortened(self) -> bool:
        return bool(self.cover)

    def eta_seconds(self, *, batch_id: Any, created: datetime, remaining: int) -> float | None:
        """When the batch's `remaining` jobs should have ended at the pace its jobs
        ended at since `since` (or since it was created, if later); None when none
        ended meanwhile."""
        ended = self.per_batch.get(batch_id, 0)
        if not ended:
            return None
        span = (self.now - max(self.since, created)).total_seconds()
        return remaining * max(span, 1.0) / ended


def recent_activity(*, now: datetime) -> Activity:
    """Three queries: the oldest event of the window (or the first event of all, when
    there are fewer), the ended jobs grouped by minute, state and batch, and
    the latest failures (with their job, batch and owner)."""
    since, cover = now - WINDOW, ""
    # The window's oldest event: the EVENT_WINDOW-th newest, or the very first when there
    # are fewer (one query; each subquery is an index look-up).
    newest = JobEvent.objects.order_by("-id").values("id")[EVENT_WINDOW - 1 : EVENT_WINDOW]
    first = JobEvent.objects.order_by("id").values("id")[:1]
    boundary = (
        JobEvent.objects.filter(id=Coalesce(Subquery(newest), Subquery(first)))
        .annotate(full=Subquery(newest))
        .values_list("id", "time", "full")
        .first()
    )
    first_id = 0
    if boundary is not None:
        first_id, first_time, full = boundary
        if first_time > since:
            since = first_time
            cover = f"the span of the newest {EVENT_WINDOW:,} state changes" if full else "since the first state change recorded"
    events = JobEvent.objects.filter(id__gte=first_id)
    activity = Activity(now=now, since=since, cover=cover)
    ended = (
        events.filter(time__gte=since, to_status__in=FINISHED)
        .annotate(minute=TruncMinute("time"))
        .order_by()
        .values_list("minute", "to_status", "job__batch_id")
        .annotate(n=Count("*"))
    )
    minutes: dict[datetime, dict[str, Any]] = {}
    for minute, status, batch_id, n in ended:
        row = minutes.setdefault(minute, {"minute": minute, "succeeded": 0, "failed": 0})
        row[status.lower()] += n
        activity.per_batch[batch_id] = activity.per_batch.get(batch_id, 0) + n
    activity.per_minute = [minutes[minute] for minute in sorted(minutes)]
    activity.failures = list(
        events.filter(to_status=Status.FAILED, job__batch__deleted_at__isnull=True)
        .order_by("-id")
        .values("time", "reason", "job_id", "job__batch_id", "job__batch__name", "job__batch__owner__username")[:RECENT_FAILURES]
    )
    return activity


def failure_reasons(*, batch_id: Any, limit: int = 10) -> list[tuple[str, int]]:
    """A batch's FAILED jobs counted per reason, most frequent first (the first `limit`),
    among at most REASON_SAMPLE of them: one query, bounded on a batch of a million."""
    sample = Job.objects.filter(batch_id=batch_id, status=Status.FAILED).order_by().values("pk")[:REASON_SAMPLE]
    rows = Job.objects.filter(pk__in=sample).order_by().values_list("reason").annotate(n=Count("*")).order_by("-n", "reason")
    return [(reason, n) for reason, n in rows[:limit]]
