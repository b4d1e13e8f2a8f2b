"""The operators' attempt and worker pages, and a job's attempts and events as tables on
its page. All read-only: attempts are written by workers (jobs.attempts), workers
register themselves (jobs.leases). Made to fit a 1,366 px screen: ids by their end,
long texts cut to their column with the whole in the tooltip, times to the millisecond
(an attempt may start and end within one second)."""

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin_pages import ReadOnlyPage, clipped, duration_text, short_id, to_the_millisecond
from core.admin_paging import LargeTableAdmin
from jobs.models import Attempt, Job, JobEvent, Worker


class AttemptColumns:
    """The columns an attempt is shown with, in the attempts' list and on its job's page."""

    @admin.display(description="started")
    def started(self, attempt: Attempt) -> str:
        # Today's to the millisecond without their date; another day's with its day and
        # to the second, so the cell is no wider (the exact time is in the tooltip).
        text = to_the_millisecond(attempt.start_time, after=timezone.now())
        if attempt.start_time is not None and timezone.localtime(attempt.start_time).date() != timezone.localdate():
            text = timezone.localtime(attempt.start_time).strftime("%b %d %H:%M:%S")
        return format_html('<span title="{}">{}</span>', to_the_millisecond(attempt.start_time), text)

    @admin.display(description="ended")
    def ended(self, attempt: Attempt) -> str:
        return to_the_millisecond(attempt.end_time, after=attempt.start_time)

    @admin.display(description="took")
    def took(self, attempt: Attempt) -> str:
        if attempt.start_time is None or attempt.end_time is None:
            return "-"
        text = duration_text((attempt.end_time - attempt.start_time).total_seconds())
        return format_html('<span title="ended {}">{}</span>', to_the_millisecond(attempt.end_time), text)

    @admin.display(description="worker")
    def worker_name(self, attempt: Attempt) -> str:
        if attempt.worker is None:
            return "-"
        url = reverse("admin:jobs_worker_change", args=[attempt.worker_id])
        return format_html('<a class="clipped" href="{}" title="{}">{}</a>', url, attempt.worker.name, attempt.worker.name)

    @admin.display(description="node")
    def node_name(self, attempt: Attempt) -> str:
        return clipped(attempt.node)

    @admin.display(description="executor's id")
    def executor_id(self, attempt: Attempt) -> str:
        return clipped(attempt.external_id)

    @admin.display(description="reason")
    def reason_text(self, attempt: Attempt) -> str:
        return clipped(attempt.reason)

    @admin.display(description="exit")
    def exit_status(self, attempt: Attempt) -> str:
        """The exit code, or the signal that killed the program; the reason code in the tooltip."""
        text = "-" if attempt.exit_code is None else str(attempt.exit_code)
        if attempt.signal is not None:
            text = f"sig {attempt.signal}"
        return format_html('<span title="{}">{}</span>', attempt.reason_code or "", text)

    @admin.display(description="used")
    def used(self, attempt: Attempt) -> str:
        return used_text(attempt)


# Figures of at most five characters and their unit, whatever the attempt used: the
# lists fit 1,366 px with the widest, "9,999 cpu-s, 1023 MiB" (exact in the tooltip).
def _cpu_seconds(value: float) -> str:
    if value < 100:
        return f"{value:.2f} cpu-s" if value < 10 else f"{value:.1f} cpu-s"
    if value < 9_999.5:
        return f"{value:,.0f} cpu-s"
    hours = value / 3600
    return f"{hours:.1f} cpu-h" if hours < 99.95 else f"{hours:,.0f} cpu-h"


def _mib(value: float) -> str:
    if value < 10:
        return f"{value:.1f} MiB"
    if value < 1_023.5:
        return f"{value:.0f} MiB"
    gib = value / 1024
    return f"{gib:.1f} GiB" if gib < 99.95 else f"{gib:,.0f} GiB"


def _measured(value: float | None, pattern: str) -> str:
    return "not measured" if value is None else pattern.format(value)


def used_text(attempt: Attempt | None) -> str:
    """What an ended attempt used, narrow enough for a list's column ("2.03 cpu-s,
    310 MiB"; "-" for a figure not measured, or with no attempt); to the millisecond
    and against what it had (as seff shows them) in the tooltip."""
    if attempt is None or (attempt.cpu_seconds is None and attempt.max_rss_mib is None):
        return "-"
    cpu = "- cpu-s" if attempt.cpu_seconds is None else _cpu_seconds(attempt.cpu_seconds)
    rss = "- MiB" if attempt.max_rss_mib is None else _mib(attempt.max_rss_mib)
    title = (
        f"attempt {attempt.number}: cpu {_measured(attempt.cpu_seconds, '{:.3f} s')} on {attempt.cpus or '?'} core(s); "
        f"peak {_measured(attempt.max_rss_mib, '{:g} MiB')} of {attempt.memory_mib or '?'} MiB; "
        f"elapsed {_measured(attempt.elapsed_seconds, '{:.3f} s')}"
    )
    return format_html('<span class="used" title="{}">{}, {}</span>', title, cpu, rss)


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    fields = ["at", "from_status", "to_status", "reason", "attempt"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    @admin.display(description="time")
    def at(self, event: JobEvent) -> str:
        return to_the_millisecond(event.time)


class AttemptInline(AttemptColumns, admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "state",
        "worker_name",
        "node_name",
        "executor_id",
        "started",
        "ended",
        "took",
        "exit_code",
        "signal",
        "reason_text",
        "reason_code",
        "charged",
        "used",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest):  # noqa: ANN201 (the admin's own type)
        return super().get_queryset(request).select_related("worker")


@admin.register(Attempt)
class AttemptAdmin(AttemptColumns, LargeTableAdmin, ReadOnlyPage, admin.ModelAdmin):
    """Attempts are written by workers only; the admin shows them."""

    keep_delete = False
    # The executor is a filter, not a column, and when an attempt ended is in the
    # tooltip of how long it took: the reason and what it used would not fit beside them.
    list_display = [
        "job_short",
        "attempt_number",
        "state",
        "worker_name",
        "node_name",
        "executor_id",
        "started",
        "took",
        "used",
        "exit_status",
        "reason_text",
    ]
    list_display_links = ["attempt_number"]
    list_filter = ["state", "executor", "charged"]
    search_fields = ["=job__id", "=external_id"]
    search_ids = ["job_id"]
    search_names = ["external_id"]
    search_help_text = "A job id, or an executor's id of the attempt (a pid, a Slurm job id), exact."
    list_select_related = ["worker"]
    raw_id_fields = ["job", "worker"]
    ordering = ["-id"]  # newest first, on the primary key's index
    sortable_by = ["job_short"]  # on the (job, number) index

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False

    @admin.display(description="#")
    def attempt_number(self, attempt: Attempt) -> int:
        return attempt.number

    @admin.display(description="job", ordering="job_id")
    def job_short(self, attempt: Attempt) -> str:
        return short_id(attempt.job_id, reverse("admin:jobs_job_change", args=[attempt.job_id]))


@admin.register(Worker)
class WorkerAdmin(ReadOnlyPage, admin.ModelAdmin):
    """Workers are registered by `runworker` and recovered by their peers; the admin
    only shows them. A worker that stopped or was lost may be deleted (its attempts keep
    their record, without it); an active one may not."""

    list_display = ["name", "executor", "state", "cpus", "memory_mib", "started_at", "heartbeat_at", "lease_expires", "stopped_at"]
    list_filter = ["state", "executor"]
    search_fields = ["name", "node"]
    fields = [
        "name",
        "executor",
        "state",
        "node",
        "pid",
        "cpus",
        "memory_mib",
        "isolation_parts",
        "keeps_attempts",
        "started_at",
        "heartbeat_at",
        "lease_expires",
        "stopped_at",
        "boot_id",
        "pid_start",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        if obj is not None and obj.state == Worker.State.ACTIVE:
            return False  # it runs: it would register again, or its jobs lose their worker
        return super().has_delete_permission(request, obj)

    @admin.display(description="isolation")
    def isolation_parts(self, worker: Worker) -> str:
        """Each part of the sealing it reported, one `part: in force` line each."""
        parts = worker.isolation or {}
        if not parts:
            return "none reported"
        return format_html_join(
            "",
            '<div class="isolation-part">{}: {}</div>',
            ((part, _in_force(value)) for part, value in sorted(parts.items())),
        )


def _in_force(value: object) -> str:
    if isinstance(value, bool):
        return "in force" if value else "not in force"
    return str(value)
