from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts import lockout_admin, share_admin  # noqa: F401 (the login lockouts; the fair-share pages)
from accounts.job_accounts import account_errors, map_job_account, unmap_job_account
from accounts.models import ApiToken, JobAccount
from accounts.services import issue_token, revoke_token, token_term_errors


class IssueTokenForm(forms.ModelForm):
    """A token lets its holder act as its user through the API: an operator who may add
    tokens but is no superuser issues them for ordinary users only, not for staff (with
    a superuser's token, anyone who may add tokens could act as that superuser)."""

    issuer_is_superuser = False  # set per request by ApiTokenAdmin.get_form

    def clean_user(self) -> Any:
        user = self.cleaned_data.get("user")
        if user is not None and (user.is_staff or user.is_superuser) and not self.issuer_is_superuser:
            raise ValidationError("Only a superuser may issue a token for a staff account.")
        return user

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for field, message in token_term_errors(name=data.get("name") or "", expires_at=data.get("expires_at")).items():
            self.add_error(field, f"The {'expiry' if field == 'expires_at' else 'name'} {message}.")
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued here or by `manage.py issue_token`, through the same service:
    the secret is shown once, on the page that follows the form, and never stored."""

    list_display = ["prefix", "user", "name", "active", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at", "expires_at", "last_used_at"]
    search_fields = ["=prefix", "user__username", "name"]
    search_help_text = "A token's prefix (the part after bt_), a user name, or words of the token's name."
    list_select_related = ["user"]
    autocomplete_fields = ["user"]  # searched by user name (the users' admin)
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        # As for issuing: only a superuser may change (extend) a staff account's token.
        if obj is not None and (obj.user.is_staff or obj.user.is_superuser) and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return ["user", "name", "expires_at"]
        return ["prefix", "user", "name", "expires_at", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        # A token's owner and secret never change; its name and expiry may.
        return [] if obj is None else ["prefix", "user", "created_at", "last_used_at", "revoked_at"]

    @admin.display(boolean=True, description="active")
    def active(self, token: ApiToken) -> bool:
        return token.is_active()

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        form = super().get_form(request, obj, change=change, **{**kwargs, "form": IssueTokenForm})
        form.issuer_is_superuser = request.user.is_superuser  # a class made for this request
        return form

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, plaintext = issue_token(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.created_at = token.pk, token.prefix, token.created_at
        request.issued_token = plaintext  # shown by response_add, then gone

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Token issued",
            "opts": self.opts,
            "token": obj,
            "plaintext": request.issued_token,
        }
        # (Admin views are never_cache: Cache-Control no-store, so no copy stays behind.)
        return TemplateResponse(request, "admin/accounts/apitoken/issued.html", context)

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = [token for token in queryset.select_related("user") if self.has_change_permission(request, token)]
        refused = queryset.count() - len(tokens)  # staff accounts' tokens, for a superuser to revoke
        revoked = sum(revoke_token(token=token) for token in tokens)
        before = len(tokens) - revoked
        message = f"Revoked {revoked} token(s)" + (f"; {before} were revoked before" if before else "")
        if refused:
            message += f"; {refused} of staff accounts left alone (only a superuser may revoke those)"
        self.message_user(request, message + ".", messages.WARNING if refused else messages.SUCCESS)


class JobAccountForm(forms.ModelForm):
    """Map a service user to an existing unix account, with the rules of
    `accounts.job_accounts` (never root or the service's user, one user per account)."""

    class Meta:
        model = JobAccount
        fields = ["username", "user"]

    def clean(self) -> dict:
        cleaned = super().clean()
        username, user = cleaned.get("username"), cleaned.get("user")
        if self.instance.pk is None and user is None:
            self.add_error("user", "Name the user whose jobs run as this account (pool accounts come from job_accounts --pool).")
        if username and user is not None and (self.instance.pk is None or self.has_changed()):
            for error in account_errors(username=username, user=user):
                self.add_error("username", error)
        return cleaned


@admin.register(JobAccount)
class JobAccountAdmin(admin.ModelAdmin):
    """The unix accounts tenants' jobs run under. Mapping goes through the same service
    as `job_accounts --map`; pool accounts are made by `job_accounts --pool N`."""

    form = JobAccountForm
    list_display = ["username", "uid", "user", "pooled", "assigned_at"]
    list_filter = ["pooled"]
    search_fields = ["username", "user__username"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["uid", "pooled", "assigned_at", "created_at"]

    def save_model(self, request: HttpRequest, obj: JobAccount, form: forms.ModelForm, change: bool) -> None:
        previous = JobAccount.objects.filter(pk=obj.pk).select_related("user").first() if obj.pk else None
        if obj.user is None:  # unmapped: that user's jobs wait for an account
            if previous is not None and previous.user is not None:
                unmap_job_account(user=previous.user)
            return
        saved = map_job_account(user=obj.user, username=obj.username)
        obj.pk, obj.uid = saved.pk, saved.uid

    def has_delete_permission(self, request: HttpRequest, obj: JobAccount | None = None) -> bool:
        # A pool account given to a user is theirs for good (their files): never deleted here.
        return super().has_delete_permission(request, obj) and (obj is None or obj.assigned_at is None)
