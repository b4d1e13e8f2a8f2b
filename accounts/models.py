"""API tokens. The secret is never stored: a public lookup prefix finds the row, and a
SHA-256 digest of the whole token is compared in constant time."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for.")
    prefix = models.CharField(max_length=16, unique=True, editable=False, help_text="Public part used to find the token.")
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class JobAccount(models.Model):
    """The unix account a service user's jobs run under: each tenant's own, so that
    what one tenant's job makes, holds or signals is apart from another's (file modes,
    per-user kernel limits, processes). Mapped by an operator to an existing account,
    or taken from the pool `job_accounts --pool N` creates. A pool account, once given
    to a user, is never given to another: files in shared filesystems that it owns stay
    that user's (`assigned_at` stays set even if the user is deleted)."""

    username = models.CharField(max_length=32, unique=True, help_text="The unix account's name on the worker machines and nodes.")
    uid = models.PositiveIntegerField(help_text="Its uid where it was mapped or created (the worker resolves the name again).")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="job_account",
        help_text="The service user whose jobs run as this account; empty: a pool account not given out yet.",
    )
    pooled = models.BooleanField(default=False, help_text="Created by `job_accounts --pool`.")
    assigned_at = models.DateTimeField(null=True, blank=True, help_text="When it was given to its user.")
    previous_user_id = models.IntegerField(
        null=True, blank=True, editable=False, help_text="Whose it was before it was unmapped: only they may have it back."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["username"]
        indexes = [models.Index(fields=["pooled", "assigned_at"], name="jobaccount_free")]

    def __str__(self) -> str:
        return self.username


class ShareGroup(models.Model):
    """A team sharing the machine as one: groups share it by their weights, and the
    users of a group share the group's part by theirs (`jobs.fairshare`)."""

    name = models.SlugField(max_length=64, unique=True)
    weight = models.PositiveIntegerField(default=1, help_text="The group's part of the machine, relative to the other groups'.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class UserShare(models.Model):
    """A user's weight in fair share, and their group. A user without a row has weight 1
    and no group (they share as a group of their own)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share")
    weight = models.PositiveIntegerField(default=1, help_text="The user's part, relative to the others' in their group (or at the top).")
    group = models.ForeignKey(ShareGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="members")

    class Meta:
        ordering = ["user__username"]

    def __str__(self) -> str:
        return f"{self.user} (weight {self.weight})"


class Capability(models.Model):
    """An empty table: the holder of permissions that belong to no row (a table of its
    own, not an unmanaged model, so that dumpdata and the admin treat it as any other). `run_commands` lets a
    user run commands of their own rather than the catalog's tools (GA4GH TES tasks);
    operators grant it in the admin (a user's permissions) or with `allow_commands`."""

    class Meta:
        default_permissions = ()
        permissions = [("run_commands", "Can run their own commands (GA4GH TES tasks)")]

    def __str__(self) -> str:
        return "capability"
