"""python manage.py list_tokens [USER]: the API tokens, without their secrets."""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import ApiToken


class Command(BaseCommand):
    help = "List API tokens (prefix, user, name, created, expires, last used, state); never their secrets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", nargs="?", help="only this user's tokens")
        parser.add_argument("--active", action="store_true", help="only tokens that work now")

    def handle(self, *args, **options) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "created_at")
        if options["user"]:
            user_model = get_user_model()
            if not user_model.objects.filter(**{user_model.USERNAME_FIELD: options["user"]}).exists():
                raise CommandError(f"no user {options['user']!r}")
            tokens = tokens.filter(**{f"user__{user_model.USERNAME_FIELD}": options["user"]})
        now = timezone.now()
        shown = 0
        self.stdout.write(f"{'prefix':<14} {'user':<16} {'state':<8} {'created':<17} {'expires':<17} {'last used':<17} name")
        for token in tokens:
            state = "active" if token.is_active(now) else "revoked" if token.revoked_at else "expired"
            if options["active"] and state != "active":
                continue
            self.stdout.write(
                f"{token.prefix:<14} {token.user.get_username():<16} {state:<8} {_when(token.created_at):<17} "
                f"{_when(token.expires_at) or 'never':<17} {_when(token.last_used_at) or 'never':<17} {token.name}"
            )
            shown += 1
        self.stdout.write(f"{shown} token(s)")


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else ""
