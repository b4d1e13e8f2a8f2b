"""python manage.py generate_load --batches 1000 --jobs 1000000: synthetic history for
benchmarks and for trying the admin at scale (jobs.load)."""

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.load import generate_load


class Command(BaseCommand):
    help = (
        "Fill the database with synthetic batches and jobs in every state, with attempts and events, for "
        "benchmarks and trying the admin at scale. Not for a database that workers serve."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batches", type=int, default=1000)
        parser.add_argument("--jobs", type=int, default=1_000_000, help="in all, spread evenly over the batches")
        parser.add_argument("--users", type=int, default=20)
        parser.add_argument("--days", type=int, default=30, help="batches created over this many past days")

    def handle(self, *args, **options) -> None:
        started = time.monotonic()
        try:
            summary = generate_load(batches=options["batches"], jobs=options["jobs"], users=options["users"], days=options["days"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"created {summary.batches} batch(es) with {summary.jobs} job(s) for {summary.users} user(s) "
                f"in {time.monotonic() - started:.0f} s"
            )
        )
