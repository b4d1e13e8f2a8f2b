"""python manage.py require_isolation [--off]: whether every job of the deployment must
run sealed, whatever one worker's environment says."""

import getpass

from django.core.management.base import BaseCommand, CommandParser

from jobs.policy import isolation_required, set_isolation_required


class Command(BaseCommand):
    help = (
        "Require sealed jobs for the whole deployment (a worker that cannot seal them gets no jobs), or with --off stop "
        "requiring it. Any worker or web server started with BATCHES_REQUIRE_ISOLATION=1 requires it too. "
        "--status prints the rule in force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--off", action="store_true", help="stop requiring sealed jobs (development, or a trusted single tenant)")
        action.add_argument("--status", action="store_true", help="print whether sealed jobs are required, and change nothing")

    def handle(self, *args, **options) -> None:
        if not options["status"]:
            set_isolation_required(required=not options["off"], by=f"require_isolation by {getpass.getuser()}")
        required = isolation_required(fresh=True)
        self.stdout.write("sealed jobs are required" if required else "sealed jobs are not required")
