from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from batches.catalog import check_tool
from batches.models import Batch, Filesystem, Tool
from batches.services import delete_batches


class ToolForm(forms.ModelForm):
    """The catalog's own check (batches.catalog.check_tool) guards the admin too: a
    string command or a misspelt parameter type used to save, then made GET /tools and
    submissions to the tool fail with 500 for every user."""

    class Meta:
        model = Tool
        fields = ["name", "description", "command", "parameters", "timeout_seconds", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "command" in data and "parameters" in data:
            try:
                data["command"], data["parameters"] = check_tool(command=data["command"], parameters=data["parameters"])
            except ValueError as exc:
                field = "command" if str(exc).startswith("command") else "parameters"
                self.add_error(field, str(exc))
        return data


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    form = ToolForm
    list_display = ["name", "description", "enabled", "timeout_seconds"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]


@admin.register(Filesystem)
class FilesystemAdmin(admin.ModelAdmin):
    list_display = ["name", "path", "read_only", "public"]
    list_filter = ["public", "read_only"]
    search_fields = ["name", "path"]
    filter_horizontal = ["users", "groups"]


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "tool", "n_jobs", "cpu", "memory", "create_time"]
    list_filter = ["tool"]
    search_fields = ["id", "name", "owner__username"]
    list_select_related = ["owner", "tool"]
    readonly_fields = ["id", "owner", "tool", "n_jobs", "cpu", "memory", "filesystems", "max_attempts", "timeout_seconds", "create_time"]
    date_hierarchy = "create_time"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # batches are submitted through the API

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        # Deleted batches are on their way out (their rows go in chunks): not shown.
        return super().get_queryset(request).filter(deleted_at__isnull=True)

    def get_deleted_objects(self, objs, request: HttpRequest):
        # Django would list (and permission-check) every job of every batch on the
        # confirmation page: a million rows. A batch's jobs and events go with it.
        batches = list(objs)
        summary = [f"Batch {batch}: its {batch.n_jobs} job(s), their events and logs" for batch in batches]
        return summary, {"batches": len(batches), "jobs": sum(batch.n_jobs for batch in batches)}, set(), []

    def delete_model(self, request: HttpRequest, obj: Batch) -> None:
        delete_batches(batches=Batch.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        deleted = delete_batches(batches=queryset)
        self.message_user(request, f"Deleted {deleted} batch(es) and their jobs.", messages.SUCCESS)
