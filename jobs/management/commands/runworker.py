"""python manage.py runworker: run jobs with the configured executor until SIGTERM."""

import gc
import logging
import signal
import socket
from types import FrameType

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.job_accounts import accounts_in_use
from jobs.executors import Executor, get_executor_class
from jobs.policy import isolation_required, set_isolation_required
from jobs.worker import WorkerConfig, WorkerLoop

logger = logging.getLogger("jobs.worker")


def check_sealing(executor: Executor) -> None:
    """Refuse to start a worker that cannot seal jobs where sealing is required, or that
    would run jobs as root; say which parts are in force. A worker started with
    BATCHES_REQUIRE_ISOLATION=1 makes sealing required for every worker."""
    missing = executor.isolation_missing()
    if settings.BATCHES_REQUIRE_ISOLATION:
        if missing:
            raise CommandError(
                "BATCHES_REQUIRE_ISOLATION is set and this machine cannot seal jobs: "
                + "; ".join(f"{part}: {why}" for part, why in missing.items())
            )
        set_isolation_required(required=True, by=f"runworker on {socket.gethostname()} (BATCHES_REQUIRE_ISOLATION=1)")
    elif isolation_required(fresh=True) and missing:
        raise CommandError(
            "the deployment requires sealed jobs (set by a process with BATCHES_REQUIRE_ISOLATION=1; "
            "python manage.py require_isolation --off lifts it) and this machine cannot seal them: "
            + "; ".join(f"{part}: {why}" for part, why in missing.items())
        )
    problem = executor.runs_as_root_problem(accounts_exist=accounts_in_use())
    if problem:
        raise CommandError(problem)
    if executor.isolation is not None and executor.isolation_report():
        # A log record, not a print: in LOG_FORMAT=json it is a JSON line like the rest.
        logger.log(logging.WARNING if missing else logging.INFO, "job isolation: %s", executor.isolation.describe())


class Command(BaseCommand):
    help = (
        "Run jobs with the executor BATCHES_EXECUTOR names until SIGTERM or Ctrl-C. Locally: claim RUNNABLE jobs "
        "that fit this machine's free cpu and memory (running attempts are stopped and requeued at the end). "
        "On a cluster: hand jobs to its scheduler and follow them (attempts keep running when the worker stops, "
        "and the next worker adopts them)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--cpus", type=int, default=settings.BATCHES_WORKER_CPUS or None, help="Cores to offer (default: the machine's)."
        )
        parser.add_argument(
            "--memory", type=int, default=settings.BATCHES_WORKER_MEMORY_MIB or None, help="Memory to offer, MiB (default: the machine's)."
        )
        parser.add_argument("--lease", type=float, default=None, help="Lease in seconds (default BATCHES_WORKER_LEASE_SECONDS).")
        parser.add_argument("--poll", type=float, default=None, help="Idle poll interval in seconds (default BATCHES_WORKER_POLL_MS).")
        parser.add_argument("--no-fencing", action="store_true", help="Do not fork the guard that kills jobs when the lease is lost.")

    def handle(self, *args, **options) -> None:
        for name in ("cpus", "memory"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name} must be at least 1")
        executor_class = get_executor_class()
        executor = executor_class.from_settings(cpus=options["cpus"], memory_mib=options["memory"])
        check_sealing(executor)
        config = WorkerConfig.from_settings(lease_seconds=options["lease"], poll_seconds=options["poll"], fencing=not options["no_fencing"])
        loop = WorkerLoop(executor=executor, config=config)
        stopping: list[int] = []

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        # What the process holds now (Django, the models, settings, the executor) lives
        # as long as it does: out of the collector's way, a full collection scans only
        # what the loop makes, instead of pausing a claim for tens of milliseconds.
        gc.freeze()
        loop.run(should_stop=lambda: bool(stopping))
