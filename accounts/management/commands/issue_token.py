"""python manage.py issue_token USER: print a new API token, and only the token."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.services import LONGEST_LIFETIME, issue_token, token_term_errors


class Command(BaseCommand):
    help = "Issue an API token for USER and print it on stdout (it is shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="user name")
        parser.add_argument("--create-user", action="store_true", help="create the user if it does not exist")
        parser.add_argument("--staff", action="store_true", help="make the user staff (may use the admin)")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument(
            "--days",
            type=int,
            default=settings.BATCHES_TOKEN_DEFAULT_DAYS,
            help="days until the token expires (0: never; default from BATCHES_TOKEN_DEFAULT_DAYS)",
        )

    def handle(self, *args, **options) -> None:
        user_model = get_user_model()
        username = options["user"]
        longest = LONGEST_LIFETIME.days
        if not 0 <= options["days"] <= longest:
            raise CommandError(f"--days must be 0 (never) to {longest} (100 years)")
        expires_at = timezone.now() + timedelta(days=options["days"]) if options["days"] else None
        errors = token_term_errors(name=options["name"], expires_at=expires_at)
        if errors:
            raise CommandError("; ".join(f"--{'days' if field == 'expires_at' else field} {message}" for field, message in errors.items()))
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            if not options["create_user"]:
                raise CommandError(f"no user {username!r}; pass --create-user to create it")
            try:  # the rules the admin's own user form keeps (letters, digits and @.+-_, length)
                user_model._meta.get_field(user_model.USERNAME_FIELD).clean(username, None)
            except ValidationError as exc:
                raise CommandError(f"cannot create user {username!r}: {' '.join(exc.messages)}") from None
            user = user_model.objects.create_user(**{user_model.USERNAME_FIELD: username})
        if options["staff"] and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        _, plaintext = issue_token(user=user, name=options["name"], expires_at=expires_at)
        self.stdout.write(plaintext)
