"""python manage.py allow_commands USER [--revoke]"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.capabilities import allow_commands, may_run_commands


class Command(BaseCommand):
    help = "Let a user run commands of their own (GA4GH TES tasks), sealed and accounted like every job; --revoke takes it back."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--revoke", action="store_true", help="Take the permission back.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        changed = allow_commands(user=user, revoke=options["revoke"])
        user = get_user_model().objects.get(pk=user.pk)  # permissions are cached per instance
        now = "may" if may_run_commands(user) else "may not"
        note = "" if changed else " (unchanged)"
        if options["revoke"] and may_run_commands(user):
            note += ": still granted through a group or as a superuser"
        self.stdout.write(f"{user.get_username()} {now} run commands of their own{note}")
