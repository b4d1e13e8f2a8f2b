"""python manage.py set_share USER --weight W [--group G [--group-weight GW]] [--no-group]"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.shares import set_share


class Command(BaseCommand):
    help = (
        "Set a user's fair-share weight (default 1) and group. Groups share the machine by their weights; "
        "the users of a group share the group's part by theirs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--weight", type=int, help="The user's weight (1 to 1,000,000).")
        parser.add_argument("--group", help="The user's group (a team); created if it does not exist.")
        parser.add_argument("--group-weight", type=int, help="The group's weight (with --group).")
        parser.add_argument("--no-group", action="store_true", help="Take the user out of their group.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        if options["weight"] is None and options["group"] is None and not options["no_group"]:
            raise CommandError("nothing to set: give --weight, --group or --no-group")
        try:
            share = set_share(
                user=user,
                weight=options["weight"],
                group=options["group"],
                group_weight=options["group_weight"],
                no_group=options["no_group"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())) from exc
        group = f", group {share.group.name} (weight {share.group.weight})" if share.group else ", no group"
        self.stdout.write(f"{user.get_username()}: weight {share.weight}{group}")
