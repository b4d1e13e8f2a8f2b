from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest

from batches.catalog import ToolError, check_path_setting, check_timeout, check_tool
from batches.models import Filesystem, Tool


class BoundedJSONField(forms.JSONField):
    """JSON as the form field reads it, but nesting too deep for the parser is a form
    error, not a 500 (RecursionError)."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError("nested too deeply to be a command or parameters", code="invalid") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:  # shown again as typed, with the error
            return InvalidJSONInput(data)


class FilesystemForm(forms.ModelForm):
    """The catalog's own check of a filesystem's path (batches.catalog.check_path_setting),
    as the tool form runs the catalog's check of a tool: a relative path saved here and
    was offered to every job."""

    class Meta:
        model = Filesystem
        fields = ["name", "description", "path", "read_only", "public", "users", "groups"]

    def clean_path(self) -> str:
        try:
            return check_path_setting(self.cleaned_data["path"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class ToolForm(forms.ModelForm):
    """The catalog's own check (batches.catalog.check_tool) guards the admin too: a
    string command or a misspelt parameter type used to save, then made GET /tools and
    submissions to the tool fail with 500 for every user."""

    class Meta:
        model = Tool
        fields = ["name", "description", "command", "parameters", "timeout_seconds", "enabled"]
        field_classes = {"command": BoundedJSONField, "parameters": BoundedJSONField}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "command" in data and "parameters" in data:
            try:
                data["command"], data["parameters"] = check_tool(command=data["command"], parameters=data["parameters"])
            except ToolError as exc:
                for field, message in exc.errors.items():
                    self.add_error(field, message)
        try:
            check_timeout(data.get("timeout_seconds"))
        except ValueError as exc:
            self.add_error("timeout_seconds", str(exc))
        return data


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    form = ToolForm
    list_display = ["name", "description", "enabled", "timeout_seconds"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]


@admin.register(Filesystem)
class FilesystemAdmin(admin.ModelAdmin):
    form = FilesystemForm
    list_display = ["name", "path", "read_only", "granted"]
    list_filter = ["public", "read_only"]
    search_fields = ["name", "path"]
    autocomplete_fields = ["users", "groups"]  # a select of every user was 3.9 MB at 78,000 users

    def get_queryset(self, request: HttpRequest) -> QuerySet[Filesystem]:
        return super().get_queryset(request).prefetch_related("users", "groups")

    @admin.display(description="granted to")
    def granted(self, filesystem: Filesystem) -> str:
        if filesystem.public:
            return "everyone (public)"
        names = [f"user {user.get_username()}" for user in filesystem.users.all()]
        names += [f"group {group.name}" for group in filesystem.groups.all()]
        return ", ".join(names) or "nobody yet"
