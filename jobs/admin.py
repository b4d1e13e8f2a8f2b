from collections.abc import Iterator

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_pages import ReadOnlyPage, to_the_second
from core.admin_paging import LargeTableAdmin
from jobs import usage_admin  # noqa: F401 (registers the usage page)
from jobs.batch_admin import OwnerFilter  # and, imported, the batch pages are registered
from jobs.executors import read_log
from jobs.models import Attempt, Delivery, Job, JobEvent, Webhook, Worker
from jobs.selectors import jobs_of_kept_batches
from jobs.services import CancelStillStopping, cancel_jobs, retry_failed_jobs


class JobOwnerFilter(OwnerFilter):
    owner_path = "batch__owner"
    parameter_name = "batch__owner__id"  # (Django allows a relation lookup named by a list filter, not one past it)


LOG_TAIL_BYTES = 8 * 1024
LOG_CHUNK_BYTES = 1024 * 1024


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    fields = ["time", "from_status", "to_status", "reason", "attempt"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = ["number", "state", "worker", "node", "external_id", "start_time", "end_time", "exit_code", "reason", "charged"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False


@admin.register(Attempt)
class AttemptAdmin(LargeTableAdmin, admin.ModelAdmin):
    """Attempts are written by workers only; the admin shows them."""

    list_display = [
        "job_id",
        "number",
        "state",
        "executor",
        "worker",
        "node",
        "external_id",
        "start_time",
        "end_time",
        "exit_code",
        "reason",
    ]
    list_filter = ["state", "executor", "charged"]
    search_fields = ["=job__id", "=external_id"]
    search_ids = ["job_id"]
    search_names = ["external_id"]
    search_help_text = "A job id, or an executor's id of the attempt (a pid, a Slurm job id), exact."
    list_select_related = ["worker"]
    raw_id_fields = ["job", "worker"]
    ordering = ["-id"]  # newest first, on the primary key's index
    sortable_by = ["job_id"]  # on the (job, number) index

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(LargeTableAdmin, ReadOnlyPage, admin.ModelAdmin):
    keep_delete = False  # only the service writes a job (its status through jobs.transitions); jobs go with their batch

    # Fits a 1,400 px screen beside the filters: a job and its batch by the end of their
    # ids (the whole id in the tooltip), start and stop in the duration's tooltip, and
    # the reason given room (templates/admin/jobs/job/change_list.html).
    list_display = ["job", "status", "reason", "tool", "batch_short", "owner", "attempts", "worker", "created", "duration"]
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
        "start_time",
        "stop_time",
        "charged_attempts",
        "cancel_requested_at",
        "cancel_requested_by",
        "log",
    ]
    inlines = [AttemptInline, JobEventInline]
    actions = ["cancel", "retry"]

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
        return to_the_second(job.create_time)

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        if job.start_time is None:
            return "-"
        seconds = ((job.stop_time or timezone.now()) - job.start_time).total_seconds()
        text = f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"
        if job.stop_time is None:
            text += " so far"
        return format_html(
            '<span title="started {}, stopped {}">{}</span>', to_the_second(job.start_time), to_the_second(job.stop_time), text
        )

    @admin.display(description="job", ordering="id")
    def job(self, job: Job) -> str:
        # The end of the id: the start of a uuid7 is its time, shared by a batch's jobs.
        return format_html('<span title="{}">…{}</span>', job.pk, str(job.pk)[-12:])

    @admin.display(description="batch", ordering="batch_id")
    def batch_short(self, job: Job) -> str:
        url = reverse("admin:batches_batch_change", args=[job.batch_id])
        return format_html('<a href="{}" title="{}">…{}</a>', url, job.batch_id, str(job.batch_id)[-12:])

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


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """Workers are registered by `runworker` and recovered by their peers; the admin
    only shows them."""

    list_display = ["name", "executor", "state", "cpus", "memory_mib", "started_at", "heartbeat_at", "lease_expires", "stopped_at"]
    list_filter = ["state", "executor"]
    search_fields = ["name", "node"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """Webhook deliveries, read-only: what was sent where, and each try."""

    list_display = ["id", "event_type", "event_id", "webhook", "state", "created", "next_try", "delivered", "try_count"]
    list_filter = ["state", "event_type"]
    list_select_related = ["webhook"]
    search_fields = ["=batch_id", "=event_id"]
    readonly_fields = ["webhook", "event_id", "event_type", "batch_id", "payload", "state", "created", "next_try", "delivered", "tries"]
    show_full_result_count = False

    @admin.display(description="tries")
    def try_count(self, delivery: Delivery) -> int:
        return len(delivery.tries)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "owner", "event_types", "created", "cursor"]
    list_select_related = ["owner"]
    search_fields = ["url", "owner__username"]
    fields = ["owner", "url", "event_types", "created", "cursor"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
