"""What the admin's read-only pages share: times as operators read them, and pages that
edit nothing (rows written by services only)."""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone


def to_the_second(moment: datetime | None) -> str:
    """A time as operators read it: local, to the second ("-" when not yet)."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


class ReadOnlyPage:
    """For model admins whose pages edit nothing (rows written by services only): no
    save buttons, and titles that do not offer to change anything ("Job <id>", "Jobs");
    `keep_delete` says whether the delete button stays."""

    keep_delete = True

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None) -> Any:
        extra = {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "title": f"{self.opts.verbose_name.capitalize()} {object_id}",
        }
        if not self.keep_delete:
            extra["show_delete"] = False
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        extra = {"title": self.opts.verbose_name_plural.capitalize()}
        return super().changelist_view(request, extra_context={**extra, **(extra_context or {})})
