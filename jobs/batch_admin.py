"""The operators' batch pages: batches with their jobs' progress, the filters by state and
owner, a batch's failures counted per reason, and the actions on a batch's jobs (cancel,
retry, delete) as list actions and as buttons on its page, through the same services as
the API."""

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from batches.models import Batch
from core.admin_pages import Button, ObjectButtons, ReadOnlyPage, to_the_second
from core.admin_paging import BoundedActions, CappedPaginator, uuid_or_none
from jobs.activity import REASON_SAMPLE, failure_reasons
from jobs.counts import status_counts, status_counts_of_batches
from jobs.models import Job
from jobs.removal import delete_batches
from jobs.services import CancelStillStopping, cancel_batch, retry_failed_jobs
from jobs.statuses import UNFINISHED, Status
from jobs.usage_report import batch_usage


class OwnerFilter(admin.SimpleListFilter):
    """Owners to filter by: the users who have batches (not every user of the site)."""

    title = "owner"
    owner_path = "owner"  # from the listed model to the batch's owner
    parameter_name = "owner__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        owners = get_user_model().objects.filter(Exists(Batch.objects.filter(owner=OuterRef("pk")))).order_by("username")
        return [(str(user.pk), user.get_username()) for user in owners]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        if self.value() not in {value for value, _ in self.lookup_choices}:
            # Not an owner offered (?owner__id__exact=abc was a 500): the admin's own
            # answer to a bad filter value.
            raise IncorrectLookupParameters(f"no owner {self.value()!r}")
        return queryset.filter(**{self.owner_path: self.value()})


# The seven states in the order a job goes through them, with the colour of each in the
# progress bars and the status badges.
STATE_COLOURS = {
    Status.SUCCEEDED: "#2e7d32",
    Status.FAILED: "#c62828",
    Status.RUNNING: "#1565c0",
    Status.STARTING: "#64b5f6",
    Status.RUNNABLE: "#f9a825",
    Status.PENDING: "#ef6c00",
    Status.SUBMITTED: "#9e9e9e",
}


# Dark text on the light colours, white on the others.
_DARK_TEXT = {Status.STARTING, Status.RUNNABLE, Status.SUBMITTED}


def status_badge(status: str) -> str:
    """A job's status as a coloured badge, the colours of the progress bars."""
    text = "#1b1b1b" if status in _DARK_TEXT else "#fff"
    return format_html(
        '<span class="status-badge status-{}" style="background:{};color:{}">{}</span>',
        status.lower(),
        STATE_COLOURS.get(status, "#9e9e9e"),
        text,
        Status(status).label if status in Status.values else status,
    )


def progress_bar(counts: dict[str, int]) -> str:
    """The seven counts as one bar (a segment per state, widths in proportion, each
    named in its tooltip) and a line of figures under it."""
    total = sum(counts.values()) or 1
    segments = format_html_join(
        "",
        '<span title="{} {}" style="display:inline-block;height:100%;width:{}%;background:{}"></span>',
        ((n, state, f"{100 * n / total:.2f}", colour) for state, colour in STATE_COLOURS.items() if (n := counts[state.lower()])),
    )
    ended = counts["succeeded"] + counts["failed"]
    figures = ", ".join(f"{state.lower()} {counts[state.lower()]}" for state in STATE_COLOURS if counts[state.lower()])
    return format_html(
        '<div class="batch-progress" style="width:14em;height:.8em;background:#eee;display:flex;overflow:hidden;border-radius:2px">{}</div>'
        '<div style="font-size:.85em">{} of {} ended: {}</div>',
        segments,
        ended,
        sum(counts.values()),
        figures or "no jobs",
    )


def _figure(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def usage_table(report: dict[str, Any]) -> str:
    """A batch's usage report (jobs.usage_report.batch_usage) as `batches usage` prints
    it, a figure per row; a batch with no ended attempt says so."""
    if not report["attempts"]:
        return "nothing measured yet: no attempt of this batch has ended"
    rss, elapsed = report["max_rss_mib"], report["elapsed_seconds"]
    codes = sorted(report["reason_codes"].items(), key=lambda item: (-item[1], item[0]))
    rows = [
        ("jobs ended", f"{report['jobs_ended']} ({report['attempts']} attempt(s) ended)"),
        ("asked per job", f"{report['cpus']} core(s), {report['memory_mib']} MiB"),
        ("cpu used", _figure(report["cpu_seconds"], "{:.3f} s")),
        ("cpu efficiency", _figure(report["cpu_efficiency"], "{:.1%} of elapsed x cores")),
        ("max RSS", f"peak {_figure(rss['peak'], '{:.1f} MiB')}, median {_figure(rss['median'], '{:.1f} MiB')}"),
        ("memory efficiency", _figure(report["memory_efficiency"], "{:.1%} of the memory asked (mean)")),
        ("elapsed", ", ".join(f"{key} {_figure(elapsed[key], '{:.3f} s')}" for key in ("min", "median", "max", "total"))),
        ("ended as", ", ".join(f"{code or '(none)'} {n}" for code, n in codes)),
    ]
    cells = ((label, label.replace(" ", "-").lower(), value) for label, value in rows)
    body = format_html_join("", '<tr><th scope="row">{}</th><td class="usage-{}">{}</td></tr>', cells)
    return format_html('<table id="batch-usage"><tbody>{}</tbody></table>', body)


def _counts(batch: Batch) -> dict[str, int]:
    """The batch's jobs per state, counted once for its page (its fields and buttons)."""
    if not hasattr(batch, "page_counts"):
        batch.page_counts = status_counts(batch=batch)
    return batch.page_counts


class BatchStateFilter(admin.SimpleListFilter):
    """A batch's state, from its jobs: each choice an EXISTS on the (batch, status, index)
    index per batch."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("unfinished", "jobs still to run"),
            ("ended", "every job ended"),
            ("failed", "some jobs failed"),
            ("cancelling", "cancel requested"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Batch]) -> QuerySet[Batch]:
        jobs = Job.objects.filter(batch=OuterRef("pk"))
        if self.value() == "unfinished":
            return queryset.filter(Exists(jobs.filter(status__in=UNFINISHED)))
        if self.value() == "ended":
            return queryset.exclude(Exists(jobs.filter(status__in=UNFINISHED)))
        if self.value() == "failed":
            return queryset.filter(Exists(jobs.filter(status=Status.FAILED)))
        if self.value() == "cancelling":
            return queryset.filter(cancel_requested_at__isnull=False).filter(Exists(jobs.filter(status__in=UNFINISHED)))
        return queryset


class BatchChangeList(ChangeList):
    """Counts the page's batches' jobs per state in one query, for the progress bars."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        counts = status_counts_of_batches(batch_ids=[batch.pk for batch in self.result_list])
        for batch in self.result_list:
            batch.page_counts = counts[batch.pk]


@admin.register(Batch)
class BatchAdmin(ObjectButtons, BoundedActions, ReadOnlyPage, admin.ModelAdmin):
    action_limit = 100  # batches per action: each cancel or delete does a chunk of work
    list_display = ["id", "name", "owner", "tool", "progress", "hardware", "created"]
    list_filter = [BatchStateFilter, "tool", OwnerFilter, ("create_time", admin.DateFieldListFilter)]
    # Exact on the id (a text search on a uuid reads every row), words in the name, the
    # owner's user name.
    search_fields = ["=id", "name", "=owner__username"]
    search_help_text = "A batch id or an owner's user name (exact), or words of the batch's name."
    list_select_related = ["owner", "tool"]
    fields = [
        "id",
        "name",
        "owner",
        "tool",
        "command",
        "jobs",
        "counts",
        "failures",
        "usage",
        "hardware",
        "filesystems",
        "max_attempts",
        "retry",
        "timeout_seconds",
        "priority",
        "max_running",
        "created",
    ]
    readonly_fields = fields
    ordering = ["-id"]  # ids grow with time: newest first, on the primary key's index
    date_hierarchy = "create_time"
    paginator = CappedPaginator
    show_full_result_count = False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Batch], search_term: str) -> tuple[QuerySet[Batch], bool]:
        # A batch id is looked up on the primary key (the admin's `=id` compares
        # UPPER(id::text), which reads every row).
        batch_id = uuid_or_none(search_term)
        if batch_id is not None:
            return queryset.filter(pk=batch_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="hardware")
    def hardware(self, batch: Batch) -> str:
        return f"{batch.cpu} cpu, {batch.memory} MiB per job"

    @admin.display(description="retry rules")
    def retry(self, batch: Batch) -> str:
        """The submission's rules, one per line, in the order they are checked."""
        if not batch.retry_rules:
            return "none: every failure is retried while attempts are left"
        lines = []
        for number, rule in enumerate(batch.retry_rules, start=1):
            match = f"exit code {', '.join(map(str, rule['on_exit_code']))}" if "on_exit_code" in rule else rule["on_reason"]
            factor = f", memory x{rule['memory_factor']:g}" if rule.get("memory_factor") else ""
            lines.append(f"{number}. {match}: {rule['action']}{factor}")
        return "\n".join(lines)

    @admin.display(description="created", ordering="id")
    def created(self, batch: Batch) -> str:
        return to_the_second(batch.create_time)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BatchChangeList

    @admin.display(description="jobs")
    def progress(self, batch: Batch) -> str:
        return progress_bar(batch.page_counts)

    @admin.display(description="jobs")
    def jobs(self, batch: Batch) -> str:
        url = reverse("admin:jobs_job_changelist") + f"?batch__id__exact={batch.pk}"
        return format_html('<a href="{}">all {} job(s)</a>', url, batch.n_jobs)

    @admin.display(description="jobs per state")
    def counts(self, batch: Batch) -> str:
        counts = _counts(batch)
        url = reverse("admin:jobs_job_changelist") + f"?batch__id__exact={batch.pk}&status__exact="
        links = format_html_join(
            ", ",
            '<a href="{}{}">{} {}</a>',
            ((url, state, state.lower(), counts[state.lower()]) for state in STATE_COLOURS if counts[state.lower()]),
        )
        return format_html("{}{}", progress_bar(counts), links)

    @admin.display(description="failures per reason")
    def failures(self, batch: Batch) -> str:
        reasons = failure_reasons(batch_id=batch.pk)
        if not reasons:
            return "none"
        failed = _counts(batch)["failed"]
        sampled = f" (counted among the first {REASON_SAMPLE:,} of its {failed:,})" if failed > REASON_SAMPLE else ""
        url = reverse("admin:jobs_job_changelist") + f"?batch__id__exact={batch.pk}&status__exact=FAILED"
        rows = format_html_join(
            "",
            '<tr><td class="failure-count">{}</td><td class="failure-reason">{}</td></tr>',
            ((n, reason or "-") for reason, n in reasons),
        )
        return format_html(
            '<table id="failure-reasons"><thead><tr><th>jobs</th><th>reason</th></tr></thead><tbody>{}</tbody></table>'
            '<div><a href="{}">the failed jobs</a>{}</div>',
            rows,
            url,
            sampled,
        )

    @admin.display(description="usage (as seff shows it)")
    def usage(self, batch: Batch) -> str:
        """What its ended attempts used, retried ones included: GET /batches/<id>/usage's figures."""
        return usage_table(batch_usage(batch=batch))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # batches are submitted through the API

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        # Deleted batches are on their way out (their rows go in chunks): not shown.
        return super().get_queryset(request).filter(deleted_at__isnull=True)

    def get_deleted_objects(self, objs, request: HttpRequest):
        # Django would list (and permission-check) every job of every batch on the
        # confirmation page: a million rows. A batch's jobs and events go with it.
        batches = list(objs)
        summary = [f"Batch {batch}: its {batch.n_jobs} job(s), their events and logs" for batch in batches]
        return summary, {"batches": len(batches), "jobs": sum(batch.n_jobs for batch in batches)}, set(), []

    def delete_model(self, request: HttpRequest, obj: Batch) -> None:
        delete_batches(batches=Batch.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        delete_batches(batches=queryset)  # the admin says "Successfully deleted N batches" itself

    actions = ["cancel_batches", "retry_batches"]
    object_actions = ("cancel", "retry")

    def object_buttons(self, request: HttpRequest, obj: Batch) -> list[Button]:
        counts = _counts(obj)
        unfinished = sum(counts[state.lower()] for state in UNFINISHED)
        return [
            ("Cancel", "cancel", "" if unfinished else "Every job has ended: nothing to cancel."),
            ("Retry failed jobs", "retry", "" if counts["failed"] else "No job has failed: nothing to retry."),
        ]

    # The page's buttons are the list's actions on one batch: the same services as the
    # API's POST /batches/<id>/cancel and /retry, with the same messages.
    def act_cancel(self, request: HttpRequest, batch: Batch) -> None:
        self.cancel_batches(request, Batch.objects.filter(pk=batch.pk))

    def act_retry(self, request: HttpRequest, batch: Batch) -> None:
        self.retry_batches(request, Batch.objects.filter(pk=batch.pk))

    @admin.action(description="Cancel selected batches (their unfinished jobs)", permissions=["change"])
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        results = [cancel_batch(batch=batch, by=request.user) for batch in queryset]
        cancelled, stopping = sum(r.cancelled for r in results), sum(r.stopping for r in results)
        self.message_user(
            request,
            f"Cancelling {len(results)} batch(es): {cancelled} queued job(s), {stopping} running one(s) once they stop.",
            messages.SUCCESS,
        )

    @admin.action(description="Retry the FAILED jobs of selected batches", permissions=["change"])
    def retry_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        failed = Job.objects.filter(batch__in=queryset, status=Status.FAILED)
        most = settings.BATCHES_MAX_JOBS_PER_BATCH  # what one retry through the API may do
        if failed.order_by().values("pk")[: most + 1].count() > most:
            self.message_user(request, f"Nothing done: more than {most:,} failed jobs; retry fewer batches at once.", messages.ERROR)
            return
        try:
            retried = retry_failed_jobs(jobs=Job.objects.filter(batch__in=queryset))
        except CancelStillStopping as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Retried {retried} job(s).", messages.SUCCESS)
