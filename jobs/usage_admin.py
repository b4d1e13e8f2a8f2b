"""The operators' usage page: each user's decayed usage as fair share reads it now
(`jobs.fairshare`: recorded usage decayed to this moment, plus what their running
attempts have used so far), beside their weight and group. Read-only: usage is written
by the workers only, as attempts end."""

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest
from django.utils import timezone

from core.admin_pages import ReadOnlyPage, to_the_second
from jobs import fairshare
from jobs.models import Usage


def _with_standings(rows: list[Usage]) -> None:
    """Each row's user's standing now (one pass of `fairshare.standings`: three queries
    whatever the page), on the row as `standing`."""
    if not rows:
        return
    found = fairshare.standings(now=timezone.now())
    for row in rows:
        row.standing = found.get(row.user_id) or fairshare.Standing(user_id=row.user_id, username="", weight=1, group=None, group_weight=1)


class UsageChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)  # the rows shown, read once and annotated
        _with_standings(self.result_list)


@admin.register(Usage)
class UsageAdmin(ReadOnlyPage, admin.ModelAdmin):
    """Users with recorded usage (a user whose first attempts still run has no row yet:
    `GET /shares` counts them). Weights are set on the shares' pages."""

    keep_delete = False
    list_display = ["user", "usage_now", "running_cpus", "weight", "group", "recorded", "recorded_at"]
    search_fields = ["user__username"]
    search_help_text = "A user name (or part of one)."
    list_select_related = ["user"]
    ordering = ["user__username"]
    sortable_by = ["user"]  # the usage now is computed, not a column
    fields = ["user", "usage_now", "running_cpus", "weight", "group", "recorded", "recorded_at"]
    readonly_fields = fields

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return UsageChangeList

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Usage | None:
        row = super().get_object(request, object_id, from_field)
        if row is not None:
            _with_standings([row])
        return row

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Usage | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Usage | None = None) -> bool:
        return False

    @admin.display(description="usage now (cpu-s)")
    def usage_now(self, row: Usage) -> str:
        return f"{row.standing.usage:,.0f}"

    @admin.display(description="running cpus")
    def running_cpus(self, row: Usage) -> int:
        return row.standing.running_cpus

    @admin.display(description="weight")
    def weight(self, row: Usage) -> int:
        return row.standing.weight

    @admin.display(description="group")
    def group(self, row: Usage) -> str:
        return row.standing.group or "-"

    @admin.display(description="recorded (cpu-s)")
    def recorded(self, row: Usage) -> str:
        return f"{row.cpu_seconds:,.0f}"

    @admin.display(description="recorded at")
    def recorded_at(self, row: Usage) -> str:
        return to_the_second(row.as_of)
