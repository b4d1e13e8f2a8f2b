"""What the admin's read-only pages share: times and durations as operators read them,
pages that edit nothing (rows written by services only), and buttons on a change page
that POST one action on its object."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html


def to_the_second(moment: datetime | None) -> str:
    """A time as operators read it: local, to the second ("-" when not yet)."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def short_time(moment: datetime | None) -> str:
    """A time in a narrow column: the time of day when it is today, else the date; the
    whole to the second in the tooltip."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    text = local.strftime("%H:%M:%S") if local.date() == timezone.localdate() else local.strftime("%Y-%m-%d")
    return format_html('<span title="{}">{}</span>', to_the_second(moment), text)


def to_the_millisecond(moment: datetime | None, *, after: datetime | None = None) -> str:
    """A time to the millisecond (an attempt may start and end within one second);
    without its date when it is the same day as `after` (the start it ends)."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    same_day = after is not None and timezone.localtime(after).date() == local.date()
    return local.strftime("%H:%M:%S.%f" if same_day else "%Y-%m-%d %H:%M:%S.%f")[:-3]


def duration_text(seconds: float) -> str:
    """A duration as people read it: milliseconds shown under ten seconds ("0.004 s",
    "1.23 s"), then tenths, minutes, hours."""
    if seconds < 0.001:
        return "under 1 ms"
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def short_id(value: Any, url: str | None = None) -> str:
    """An id by its end (the start of a uuid7 is its time, shared by a batch's jobs), the
    whole id in the tooltip; a link when `url` is given."""
    text = str(value)
    if url:
        return format_html('<a class="short-id" href="{}" title="{}">…{}</a>', url, text, text[-12:])
    return format_html('<span class="short-id" title="{}">…{}</span>', text, text[-12:])


def clipped(text: str, *, dim: bool = False) -> str:
    """A long text cut to its column's width by the page's style (`.clipped`), whole in
    its tooltip; `dim` for one that repeats the row above."""
    if not text:
        return "-"
    return format_html('<span class="clipped{}" title="{}">{}</span>', " same-as-above" if dim else "", text, text)


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


# One button: (label, name of the URL's action, why it is disabled or "" when it is not).
Button = tuple[str, str, str]


class ObjectButtons:
    """Buttons on a change page (`object_buttons`), each a form that POSTs to
    `<object id>/<action>/` with the CSRF token. The view checks the change permission on
    the object, calls `act_<action>(request, obj)` (which calls the same service as the
    API and the list actions, and says what it did in a message) and goes back to the
    page. Operators who may not change the object see no buttons."""

    object_actions: tuple[str, ...] = ()

    def object_buttons(self, request: HttpRequest, obj: Any) -> list[Button]:
        return []

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        mine = [
            path(
                f"<path:object_id>/{action}/",
                self.admin_site.admin_view(self._object_action(action)),
                name=f"{info[0]}_{info[1]}_{action}",
            )
            for action in self.object_actions
        ]
        return [*mine, *super().get_urls()]

    def _object_action(self, action: str) -> Callable[..., HttpResponse]:
        def view(request: HttpRequest, object_id: str) -> HttpResponse:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            obj = self.get_object(request, object_id)
            if obj is None:
                raise Http404("no such object")
            if not self.has_change_permission(request, obj):
                raise PermissionDenied
            getattr(self, f"act_{action}")(request, obj)
            return redirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk]))

        return view

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        # Read once per request: the buttons and the page's fields share the object
        # (and what its fields computed on it, such as a batch's counts).
        cache = request.__dict__.setdefault("_objects_read", {})
        key = (self.model, object_id, from_field)
        if key not in cache:
            cache[key] = super().get_object(request, object_id, from_field)
        return cache[key]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None) -> Any:
        buttons: list[dict[str, str]] = []
        obj = self.get_object(request, object_id)
        if obj is not None and self.has_change_permission(request, obj):
            for label, action, disabled in self.object_buttons(request, obj):
                url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{action}", args=[obj.pk])
                buttons.append({"label": label, "url": url, "action": action, "disabled": disabled})
        return super().change_view(request, object_id, form_url, extra_context={"object_buttons": buttons, **(extra_context or {})})
