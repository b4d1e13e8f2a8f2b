"""The operators' dashboard (/admin/dashboard/): jobs per state, per user and per tool
now, the queue's depth and its oldest waiting job, and the workers with their load and
last heartbeat. Staff only (the admin's own login); a fixed number of queries whatever
the number of jobs: counts come from the status index, and users and tools from the
batches that have unfinished jobs."""

from collections import Counter
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from batches.models import Batch
from jobs.selectors import active_workers, oldest_waiting_since, state_counts_by_batch
from jobs.statuses import QUEUED, UNFINISHED, Status


def dashboard_figures() -> dict[str, Any]:
    now = timezone.now()
    states: Counter[str] = Counter()
    unfinished: Counter[Any] = Counter()
    for (batch_id, state), n in state_counts_by_batch().items():
        states[state] += n
        if state in UNFINISHED:
            unfinished[batch_id] += n
    per_user: Counter[str] = Counter()
    per_tool: Counter[str] = Counter()
    for batch_id, owner, tool in Batch.objects.filter(pk__in=list(unfinished)).values_list("pk", "owner__username", "tool__name"):
        per_user[owner] += unfinished[batch_id]
        per_tool[tool] += unfinished[batch_id]
    oldest = oldest_waiting_since()
    workers = active_workers()
    for worker in workers:
        worker["heartbeat_age"] = int((now - worker["heartbeat_at"]).total_seconds())
        worker["lease_left"] = int((worker["lease_expires"] - now).total_seconds())
    return {
        "states": [(state, states[state]) for state in Status.values],
        "total": sum(states.values()),
        "queue_depth": sum(states[s] for s in QUEUED),
        "oldest_waiting": oldest,
        "oldest_waiting_seconds": int((now - oldest).total_seconds()) if oldest else None,
        "per_user": per_user.most_common(20),
        "per_tool": per_tool.most_common(20),
        "workers": workers,
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    # Every user's counts: for operators who may see jobs, not for any staff account.
    if not request.user.has_perm("jobs.view_job"):
        raise PermissionDenied
    context = {**admin.site.each_context(request), "title": "Dashboard", **dashboard_figures()}
    return TemplateResponse(request, "admin/dashboard.html", context)
