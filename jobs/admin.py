"""The operators' job pages: the list (a status badge per job, one line per job on a
1,366 px screen), a job's page with its log's tail, attempts and events, and Cancel and
Retry as list actions and as buttons on the page, through the API's own services."""

from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_pages import Button, ObjectButtons, ReadOnlyPage, clipped, duration_text, short_id, short_time, to_the_millisecond
from core.admin_paging import IndexedOrderingChangeList, LargeTableAdmin
from jobs import usage_admin, webhook_admin  # noqa: F401 (register the usage, webhook and delivery pages)
from jobs.attempt_admin import AttemptInline, JobEventInline, used_text  # and, imported, the attempt and worker pages are registered
from jobs.batch_admin import OwnerFilter, status_badge  # and, imported, the batch pages are registered
from jobs.executors import read_log
from jobs.models import Job
from jobs.selectors import jobs_of_kept_batches, last_ended_attempts
from jobs.services import CancelStillStopping, cancel_jobs, retry_failed_jobs
from jobs.statuses import UNFINISHED, Status


class JobOwnerFilter(OwnerFilter):
    owner_path = "batch__owner"
    parameter_name = "batch__owner__id"  # (Django allows a relation lookup named by a list filter, not one past it)


LOG_TAIL_BYTES = 8 * 1024
LOG_CHUNK_BYTES = 1024 * 1024


class JobChangeList(IndexedOrderingChangeList):
    """Marks each job whose reason is the one of the row above: a page of a batch's
    waiting jobs said "Waiting for a worker with 1 free cpu and 256 MiB" a hundred times.
    Reads the page's jobs' last ended attempts in one query, for what they used."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        last = last_ended_attempts(job_ids=[job.pk for job in self.result_list])
        for job in self.result_list:
            job.last_ended_attempt = last.get(job.pk)
        above = None
        for job in self.result_list:
            job.same_reason_as_above = bool(job.reason) and job.reason == above
            above = job.reason


@admin.register(Job)
class JobAdmin(ObjectButtons, LargeTableAdmin, ReadOnlyPage, admin.ModelAdmin):
    keep_delete = False  # only the service writes a job (its status through jobs.transitions); jobs go with their batch

    # Fits a 1,366 px screen beside the filters, one line per job: a job and its batch by
    # the end of their ids (the whole id in the tooltip), start and stop in the
    # duration's tooltip, the reason cut to its column (whole in its tooltip) and not
    # repeated from the row above, what the last ended attempt used beside the count
    # of attempts (templates/admin/jobs/job/change_list.html).
    list_display = [
        "job",
        "status_badge",
        "reason_text",
        "tool",
        "batch_short",
        "owner",
        "attempts_used",
        "worker_name",
        "created",
        "duration",
    ]
    # Created: the batch's time, which its jobs share (jobs.services.create_jobs): the
    # batches of a day are found on the small table and their jobs on the batch index
    # (10 ms at a million jobs; a scan of the jobs' own column took 270).
    list_filter = ["status", ("batch__create_time", admin.DateFieldListFilter), "batch__tool", JobOwnerFilter, "worker"]
    # Exact matches on indexed columns only: a job, batch or log id, or the owner's name.
    search_fields = ["=id", "=batch__id", "=log_id", "=batch__owner__username"]
    search_ids = ["id", "batch_id", "log_id"]
    search_names = ["batch__owner__username__iexact"]  # as the batch list finds owners
    search_help_text = "A job, batch or log id, or an owner's user name (whole, any case)."
    list_select_related = ["batch__tool", "batch__owner", "worker"]
    ordering = ["-id"]  # ids grow with time: newest first, on the primary key's index
    sortable_by = ["job", "batch_short", "created"]  # on indexes (the others sorted a million rows)
    raw_id_fields = ["batch"]
    readonly_fields = [
        "id",
        "batch",
        "index",
        "args",
        "log_id",
        "status",
        "reason",
        "attempts",
        "exit_code",
        "create_time",
        "started",
        "stopped",
        "charged_attempts",
        "cancel_requested_at",
        "cancel_requested_by",
        "log",
    ]
    inlines = [AttemptInline, JobEventInline]
    actions = ["cancel", "retry"]
    object_actions = ("cancel", "retry")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False  # jobs go with their batch

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        # A deleted batch's jobs leave this list at once, as they leave the API.
        return super().get_queryset(request) & jobs_of_kept_batches()

    @admin.display(description="log")
    def log(self, job: Job) -> str:
        """The log's last lines on the page, and a link to all of it."""
        size = read_log(log_id=job.log_id, offset=0, limit=0)[1]
        if not size:
            return "empty (the job has written nothing yet)"
        tail = read_log(log_id=job.log_id, offset=max(0, size - LOG_TAIL_BYTES), limit=LOG_TAIL_BYTES)[0]
        text = tail.decode(errors="replace")
        if size > LOG_TAIL_BYTES:
            text = text.split("\n", 1)[-1]  # from the first whole line
        url = reverse("admin:jobs_job_log", args=[job.pk])
        return format_html(
            '<a href="{}">whole log ({} bytes)</a><pre class="job-log" style="max-height: 30em; overflow: auto; white-space: pre-wrap">{}</pre>',
            url,
            f"{size:,}",
            text,
        )

    def get_urls(self) -> list[URLPattern]:
        whole_log = path("<uuid:job_id>/log/", self.admin_site.admin_view(self.log_view), name="jobs_job_log")
        return [whole_log, *super().get_urls()]

    def log_view(self, request: HttpRequest, job_id: str) -> HttpResponse:
        """The job's whole log as text, read a chunk at a time (a log may be large)."""
        job = Job.objects.filter(pk=job_id).only("log_id").first()
        if job is None or not self.has_view_permission(request, job):
            raise Http404("no such job")

        def chunks() -> Iterator[bytes]:
            offset = 0
            while True:
                data, _ = read_log(log_id=job.log_id, offset=offset, limit=LOG_CHUNK_BYTES)
                if not data:
                    return
                offset += len(data)
                yield data

        return StreamingHttpResponse(chunks(), content_type="text/plain; charset=utf-8")

    @admin.display(description="tool", ordering="batch__tool__name")
    def tool(self, job: Job) -> str:
        return job.batch.tool.name

    @admin.display(description="owner", ordering="batch__owner__username")
    def owner(self, job: Job) -> str:
        return job.batch.owner.get_username()

    @admin.display(description="created", ordering="id")
    def created(self, job: Job) -> str:
        return short_time(job.create_time)

    @admin.display(description="worker")
    def worker_name(self, job: Job) -> str:
        return clipped(job.worker.name) if job.worker else "-"

    @admin.display(description="start time")
    def started(self, job: Job) -> str:
        return to_the_millisecond(job.start_time)

    @admin.display(description="stop time")
    def stopped(self, job: Job) -> str:
        return to_the_millisecond(job.stop_time)

    @admin.display(description="status")
    def status_badge(self, job: Job) -> str:
        return status_badge(job.status)

    @admin.display(description="reason")
    def reason_text(self, job: Job) -> str:
        if getattr(job, "same_reason_as_above", False):
            return format_html('<span class="same-as-above" title="{}">↑ same as above</span>', job.reason)
        return clipped(job.reason)

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        if job.start_time is None:
            return "-"
        text = duration_text(((job.stop_time or timezone.now()) - job.start_time).total_seconds())
        if job.stop_time is None:
            text += " so far"
        return format_html(
            '<span title="started {}, stopped {}">{}</span>', to_the_millisecond(job.start_time), to_the_millisecond(job.stop_time), text
        )

    @admin.display(description="attempts · used")
    def attempts_used(self, job: Job) -> str:
        """Its attempts, and what the last ended one used (JobDetail's `usage`; every
        attempt's is on the job's page): one column, the list had no room for two."""
        last = getattr(job, "last_ended_attempt", None)
        if last is None:
            return str(job.attempts)
        return format_html("{} · {}", job.attempts, used_text(last))

    @admin.display(description="job", ordering="id")
    def job(self, job: Job) -> str:
        return short_id(job.pk)

    @admin.display(description="batch", ordering="batch_id")
    def batch_short(self, job: Job) -> str:
        return short_id(job.batch_id, reverse("admin:batches_batch_change", args=[job.batch_id]))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

    def object_buttons(self, request: HttpRequest, obj: Job) -> list[Button]:
        return [
            ("Cancel", "cancel", "" if obj.status in UNFINISHED else "The job has ended: nothing to cancel."),
            ("Retry", "retry", "" if obj.status == Status.FAILED else "Only a FAILED job is retried."),
        ]

    # The list's actions and the page's buttons: the same services as the API's
    # POST /batches/<id>/jobs/<id>/cancel, with the same messages.
    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        result = cancel_jobs(jobs=queryset, by=request.user)
        self.message_user(
            request, f"Cancelled {result.changed} job(s); {result.stopping} of them stop once their attempt has.", messages.SUCCESS
        )

    @admin.action(description="Retry selected FAILED jobs", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        try:
            self.message_user(request, f"Retried {retry_failed_jobs(jobs=queryset)} job(s).", messages.SUCCESS)
        except CancelStillStopping as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def act_cancel(self, request: HttpRequest, job: Job) -> None:
        self.cancel(request, Job.objects.filter(pk=job.pk))

    def act_retry(self, request: HttpRequest, job: Job) -> None:
        self.retry(request, Job.objects.filter(pk=job.pk))
