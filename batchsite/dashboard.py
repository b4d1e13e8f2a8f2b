"""The operators' dashboard (/admin/dashboard/): jobs per state, per user and per tool
now, the queue's depth and its oldest waiting job, jobs ended per minute over the last
ten minutes with each unfinished batch's expected end, the latest failures, and the
workers with their load and last heartbeat. It reloads itself every REFRESH_SECONDS
(`?refresh=0` stops it). Staff only (the admin's own login); a fixed number of queries
whatever the number of jobs: counts come from the status index, users and tools from
the batches that have unfinished jobs, the last minutes from the newest job events
(jobs.activity)."""

from collections import Counter
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from batches.models import Batch
from core.admin_pages import duration_text
from jobs.activity import RECENT_FAILURES, WINDOW, recent_activity
from jobs.batch_admin import progress_bar
from jobs.selectors import active_workers, oldest_waiting_since, state_counts_by_batch
from jobs.statuses import LIVE, QUEUED, UNFINISHED, Status

REFRESH_SECONDS = 10
ETA_BATCHES = 20  # unfinished batches listed with their expected end


def dashboard_figures() -> dict[str, Any]:
    now = timezone.now()
    states: Counter[str] = Counter()
    unfinished: Counter[Any] = Counter()
    per_batch: dict[Any, dict[str, int]] = {}
    for (batch_id, state), n in state_counts_by_batch().items():
        states[state] += n
        per_batch.setdefault(batch_id, dict.fromkeys((s.lower() for s in Status.values), 0))[state.lower()] = n
        if state in UNFINISHED:
            unfinished[batch_id] += n
    per_user: Counter[str] = Counter()
    per_tool: Counter[str] = Counter()
    batches = Batch.objects.filter(pk__in=list(unfinished)).values("pk", "name", "create_time", "owner__username", "tool__name")
    activity = recent_activity(now=now)
    running = []
    for batch in batches:
        per_user[batch["owner__username"]] += unfinished[batch["pk"]]
        per_tool[batch["tool__name"]] += unfinished[batch["pk"]]
        counts = per_batch[batch["pk"]]
        eta = activity.eta_seconds(batch_id=batch["pk"], created=batch["create_time"], remaining=unfinished[batch["pk"]])
        running.append(
            {
                **batch,
                "progress": progress_bar(counts),
                "live": sum(counts[s.lower()] for s in LIVE),
                "remaining": unfinished[batch["pk"]],
                "ended_recently": activity.per_batch.get(batch["pk"], 0),
                "eta": duration_text(eta) if eta is not None else None,
            }
        )
    # Batches with jobs running first, then the others waiting; the oldest first in each.
    running.sort(key=lambda row: (row["live"] == 0, row["pk"]))
    oldest = oldest_waiting_since()
    workers = active_workers()
    for worker in workers:
        worker["heartbeat_age"] = int((now - worker["heartbeat_at"]).total_seconds())
        worker["lease_left"] = int((worker["lease_expires"] - now).total_seconds())
    tallest = max((row["succeeded"] + row["failed"] for row in activity.per_minute), default=0) or 1
    for row in activity.per_minute:
        row["height"] = f"{100 * (row['succeeded'] + row['failed']) / tallest:.0f}"
    return {
        "now": now,
        "states": [(state, states[state]) for state in Status.values],
        "total": sum(states.values()),
        "queue_depth": sum(states[s] for s in QUEUED),
        "oldest_waiting": oldest,
        "oldest_waiting_seconds": int((now - oldest).total_seconds()) if oldest else None,
        "per_user": per_user.most_common(20),
        "per_tool": per_tool.most_common(20),
        "workers": workers,
        "activity": activity,
        "window_minutes": int(WINDOW.total_seconds() // 60),
        "span": duration_text((now - activity.since).total_seconds()) if activity.shortened else f"{WINDOW.total_seconds() / 60:.0f} min",
        "rate": f"{activity.per_minute_rate:.1f}",
        "running_batches": running[:ETA_BATCHES],
        "more_batches": max(0, len(running) - ETA_BATCHES),
        "recent_failures_shown": RECENT_FAILURES,
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    # Every user's counts: for operators who may see jobs, not for any staff account.
    if not request.user.has_perm("jobs.view_job"):
        raise PermissionDenied
    refresh = 0 if request.GET.get("refresh") == "0" else REFRESH_SECONDS
    context = {**admin.site.each_context(request), "title": "Dashboard", "refresh": refresh, **dashboard_figures()}
    return TemplateResponse(request, "admin/dashboard.html", context)
