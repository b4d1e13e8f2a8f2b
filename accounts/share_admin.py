"""The operators' fair-share pages: users' weights and groups, and the groups' weights,
editable on the list and on each page. Every save goes through `accounts.shares`
(`set_share`, `set_group`), the services `manage.py set_share` calls: one write path,
one set of rules, and a refused weight is shown on its field. Usage is on the jobs
pages (`jobs.usage_admin`)."""

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from accounts.models import ShareGroup, UserShare
from accounts.shares import check_weight, set_group, set_share

# A group's page names its members up to this many (the list says how many there are).
MEMBERS_SHOWN = 100


class WeightChecked(forms.ModelForm):
    """A form whose weight is checked by the service's own rule, so that a weight the
    service would refuse is an error on the field, not a failed save."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        weight = cleaned.get("weight")
        if "weight" in self.fields and weight is not None:
            try:
                check_weight(weight=weight)
            except ValidationError as exc:
                self.add_error(None, exc)  # on the field it names: weight
        return cleaned


class UserShareForm(WeightChecked):
    class Meta:
        model = UserShare
        fields = ["user", "weight", "group"]


class ShareGroupForm(WeightChecked):
    class Meta:
        model = ShareGroup
        fields = ["name", "weight"]


@admin.register(UserShare)
class UserShareAdmin(admin.ModelAdmin):
    """A user's weight and group, as `set_share` sets them. Users without a row weigh 1
    and have no group; adding one here is `set_share USER --weight W [--group G]`."""

    form = UserShareForm
    list_display = ["user", "group", "weight"]
    list_editable = ["weight"]
    list_filter = ["group"]
    search_fields = ["user__username"]
    search_help_text = "A user name (or part of one)."
    list_select_related = ["user", "group"]
    autocomplete_fields = ["user"]
    ordering = ["user__username"]

    def get_readonly_fields(self, request: HttpRequest, obj: UserShare | None = None) -> list[str]:
        return [] if obj is None else ["user"]  # a share is its user's for good

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm]:
        return super().get_changelist_form(request, form=WeightChecked, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: UserShare | None = None) -> bool:
        # Back to the default is weight 1 and no group, through the service like any change.
        return False

    def save_model(self, request: HttpRequest, obj: UserShare, form: forms.ModelForm, change: bool) -> None:
        group = obj.group.name if obj.group is not None else None
        saved = set_share(user=obj.user, weight=obj.weight, group=group, no_group=group is None)
        obj.pk = saved.pk


@admin.register(ShareGroup)
class ShareGroupAdmin(admin.ModelAdmin):
    """Teams: groups share the machine by their weights, their users share the group's
    part by theirs. A group's weight is set through `set_group` (as `set_share --group G
    --group-weight W` sets it); users join a group on their share's page. Only a group
    without members can be deleted (deleting one would move its users silently)."""

    form = ShareGroupForm
    list_display = ["name", "weight", "members"]
    list_editable = ["weight"]
    search_fields = ["name"]
    ordering = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ShareGroup]:
        return super().get_queryset(request).annotate(member_count=Count("members"))

    def get_readonly_fields(self, request: HttpRequest, obj: ShareGroup | None = None) -> list[str]:
        return [] if obj is None else ["name", "member_names"]

    def get_fields(self, request: HttpRequest, obj: ShareGroup | None = None) -> list[str]:
        return ["name", "weight"] if obj is None else ["name", "weight", "member_names"]

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm]:
        return super().get_changelist_form(request, form=WeightChecked, **kwargs)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would not ask each group whether it is empty
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: ShareGroup | None = None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or not obj.members.exists())

    @admin.display(description="members", ordering="member_count")
    def members(self, group: ShareGroup) -> int:
        return group.member_count

    @admin.display(description="members")
    def member_names(self, group: ShareGroup) -> str:
        shares = group.members.select_related("user").order_by("user__username")[: MEMBERS_SHOWN + 1]
        names = [(share.user.get_username(), share.weight) for share in shares]
        if not names:
            return "none"
        more = " …" if len(names) > MEMBERS_SHOWN else ""
        return format_html("{}{}", format_html_join(", ", "{} (weight {})", names[:MEMBERS_SHOWN]), more)

    def save_model(self, request: HttpRequest, obj: ShareGroup, form: forms.ModelForm, change: bool) -> None:
        saved = set_group(name=obj.name, weight=obj.weight)
        obj.pk = saved.pk
