"""Who may run commands of their own (GA4GH TES tasks) instead of the catalog's tools."""

from django.contrib.auth.models import AbstractBaseUser, Permission

RUN_COMMANDS = "accounts.run_commands"


def may_run_commands(user: AbstractBaseUser) -> bool:
    """True for an active user granted `run_commands` (directly, through a group, or a
    superuser)."""
    return bool(user.is_active and user.has_perm(RUN_COMMANDS))


def allow_commands(*, user: AbstractBaseUser, revoke: bool = False) -> bool:
    """Grant (or, with `revoke`, take back) `run_commands` to `user` directly; returns
    whether anything changed. A grant through a group is the group's to take back."""
    permission = Permission.objects.get(content_type__app_label="accounts", codename="run_commands")
    had = user.user_permissions.filter(pk=permission.pk).exists()
    if revoke and had:
        user.user_permissions.remove(permission)
    elif not revoke and not had:
        user.user_permissions.add(permission)
    return had == revoke
