"""python manage.py revoke_token PREFIX...: revoke API tokens by their public prefix."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiToken
from accounts.services import revoke_token


class Command(BaseCommand):
    help = "Revoke API tokens by their prefix (the 12 characters after bt_, as list_tokens shows), or every token of --user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", nargs="*", help="token prefixes")
        parser.add_argument("--user", help="revoke every token of this user")

    def handle(self, *args, **options) -> None:
        if not options["prefix"] and not options["user"]:
            raise CommandError("name token prefixes, or --user USER")
        # The prefix alone, `bt_<prefix>`, or the whole token (bt_<prefix>_<secret>).
        options["prefix"] = [p.split("_")[1] if p.startswith("bt_") and p.count("_") >= 1 else p for p in options["prefix"]]
        tokens = list(ApiToken.objects.filter(prefix__in=options["prefix"]))
        missing = sorted(set(options["prefix"]) - {token.prefix for token in tokens})
        if missing:
            raise CommandError(f"no token with prefix {', '.join(missing)} (nothing revoked)")
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r} (nothing revoked)")
            tokens += list(ApiToken.objects.filter(user=user))
        unique = {token.pk: token for token in tokens}.values()
        revoked = sum(revoke_token(token=token) for token in unique)
        before = len(unique) - revoked
        self.stdout.write(self.style.SUCCESS(f"revoked {revoked} token(s)" + (f"; {before} already revoked" if before else "")))
