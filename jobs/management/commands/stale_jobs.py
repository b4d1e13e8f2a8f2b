"""python manage.py stale_jobs [--settle]: jobs whose worker has stopped answering."""

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count
from django.utils import timezone

from jobs.models import Job, Worker
from jobs.recovery import recover_lost_workers
from jobs.statuses import LIVE


class Command(BaseCommand):
    help = (
        "Report workers whose lease has run out and the jobs they hold; with --settle, recover them as a running "
        "worker would (their jobs retried or FAILED 'worker lost'; a cluster's attempts kept for the next worker)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--settle", action="store_true", help="recover the jobs of workers whose lease has run out")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        expired = Worker.objects.filter(state=Worker.State.ACTIVE, lease_expires__lt=now)
        held = dict(Job.objects.filter(worker__in=expired, status__in=LIVE).order_by().values_list("worker_id").annotate(n=Count("*")))
        for worker in expired.order_by("lease_expires"):
            late = int((now - worker.lease_expires).total_seconds())
            self.stdout.write(f"worker {worker.name} ({worker.executor}): lease ran out {late} s ago, {held.get(worker.pk, 0)} live job(s)")
        stale = sum(held.values())
        self.stdout.write(f"{expired.count()} worker(s) past their lease, {stale} job(s) held")
        if options["settle"]:
            recovered = recover_lost_workers(now=now)
            self.stdout.write(self.style.SUCCESS(f"settled: {recovered} job(s) recovered"))
        elif stale:
            self.stdout.write("run with --settle to recover them now (a running worker does it within its next sweep)")
