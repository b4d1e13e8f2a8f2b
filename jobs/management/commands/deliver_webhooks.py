"""python manage.py deliver_webhooks: send the users' webhook deliveries until SIGTERM
(the algorithm is `jobs.webhook_delivery`'s docstring). One such process per deployment
is enough; it runs beside the workers, never inside them, so no receiver can slow a job."""

import signal
import time

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, close_old_connections

from jobs.webhook_delivery import POLL_SECONDS, Sender


class Command(BaseCommand):
    help = "Send webhook deliveries (signed, in order per batch, retried with backoff) until SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="one step, waiting for its tries, then exit (tests, cron)")

    def handle(self, *args, **options) -> None:
        stop = {"now": False}

        def request_stop(signum: int, frame: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        sender = Sender()
        while not stop["now"]:
            try:
                sender.step()
            except DatabaseError as exc:  # the database went away: try again shortly
                self.stderr.write(f"deliver_webhooks: {exc}")
                close_old_connections()
            if options["once"]:
                break
            time.sleep(POLL_SECONDS)
        sender.drain(timeout=15)
