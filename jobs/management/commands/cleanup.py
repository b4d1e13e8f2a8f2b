"""python manage.py cleanup: remove old finished batches, their jobs and logs."""

import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.services import forget_idempotency_keys
from jobs.feed import prune_events
from jobs.removal import cleanup_batches

_DURATION = re.compile(r"^([0-9]{1,12})([smhdw])$")  # ASCII digits: \d takes any script's
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_LONGEST = timedelta(days=36525)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `3600s`; at most 100 years."""
    match = _DURATION.match(text.strip())
    if not match:
        raise CommandError(f"--older-than must be a number and a unit (s, m, h, d, w), e.g. 30d; not {text!r}")
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = timedelta.max
    if duration > _LONGEST:
        raise CommandError(f"--older-than must be at most 100 years, not {text!r}")
    return duration


class Command(BaseCommand):
    help = (
        "Delete batches whose jobs have all finished and that saw no activity for --older-than "
        "(default 30d), with their jobs, events and logs. Batches with unfinished jobs are kept. "
        "Then remove the event feed's events older than BATCHES_EVENTS_RETENTION_DAYS (default 30)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", default="30d", help="age of the last activity, e.g. 30d, 12h (default 30d)")
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument("--user", help="only this user's batches (default: every user's)")

    def handle(self, *args, **options) -> None:
        older_than = parse_duration(options["older_than"])
        owner = None
        if options["user"] is not None:
            owner = get_user_model().objects.filter(username=options["user"]).first()
            if owner is None:
                raise CommandError(f"no user named {options['user']!r}")
        batches, jobs = cleanup_batches(older_than=older_than, dry_run=options["dry_run"], owner=owner)
        verb = "would delete" if options["dry_run"] else "deleted"
        whose = f" of {owner.get_username()}" if owner is not None else ""
        self.stdout.write(f"{verb} {batches} batch(es){whose} and {jobs} job(s) finished more than {options['older_than']} ago")
        if not options["dry_run"]:
            self.stdout.write(f"forgot {forget_idempotency_keys()} Idempotency-Key(s) older than a day")
            self.stdout.write(f"pruned {prune_events()} event(s) older than {settings.BATCHES_EVENTS_RETENTION_DAYS} day(s)")
