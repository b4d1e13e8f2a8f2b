"""What a batch used, as Slurm's `seff` reports a job: read in SQL aggregates over the
batch's ended attempts (every attempt that ran used its share, retried ones too), never
by loading them. A selector: it writes nothing.

- `cpu_seconds`: the total; `cpu_efficiency`: that over the sum of elapsed x cpus (of
  the attempts where both were measured), 1.0 when every core was busy all along;
- `max_rss_mib`: the peak and the median of the attempts' peaks; `memory_efficiency`:
  the mean of each attempt's peak over the memory it asked for;
- `elapsed_seconds`: min, median, max and total;
- `reason_codes`: attempts per `reason_code` (core.reason_codes).
A figure over no measured attempt is null. Medians are the middle value (the mean of
the two middle ones for an even count): PostgreSQL's `percentile_cont(0.5)` in the same
pass as the other aggregates, elsewhere one ordered, offset read each.
"""

from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Aggregate, Avg, Count, ExpressionWrapper, F, FloatField, Max, Min, Q, QuerySet, Sum

from batches.models import Batch
from jobs.models import Attempt
from jobs.statuses import TERMINAL


def ended_attempts(*, batch: Batch) -> QuerySet[Attempt]:
    """The batch's ended attempts (the caller has checked the batch is the user's)."""
    return Attempt.objects.filter(job__batch=batch, end_time__isnull=False).order_by()


class _Median(Aggregate):
    """PostgreSQL's continuous median of a column (nulls ignored; null over no row)."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _median(attempts: QuerySet[Attempt], field: str, count: int) -> float | None:
    """The median of `field` over the `count` attempts where it is not null."""
    if not count:
        return None
    values = attempts.filter(**{f"{field}__isnull": False}).order_by(field).values_list(field, flat=True)
    middle = list(values[(count - 1) // 2 : count // 2 + 1])
    return sum(middle) / len(middle)


def _ratio(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 4) if part is not None and whole else None


def batch_usage(*, batch: Batch) -> dict[str, Any]:
    """The batch's usage report (see the module), in as many queries whatever its size:
    the aggregates, the reason codes, the jobs ended (and elsewhere than on PostgreSQL,
    one per median)."""
    attempts = ended_attempts(batch=batch)
    busy = ExpressionWrapper(F("elapsed_seconds") * F("cpus"), output_field=FloatField())
    memory_share = ExpressionWrapper(F("max_rss_mib") / F("memory_mib"), output_field=FloatField())
    in_one_pass = connection.vendor == "postgresql"
    medians = {"rss_median": _Median("max_rss_mib"), "elapsed_median": _Median("elapsed_seconds")} if in_one_pass else {}
    totals = attempts.aggregate(
        **medians,
        count=Count("pk"),
        cpu_total=Sum("cpu_seconds"),
        measured_cpu=Sum("cpu_seconds", filter=_both("cpu_seconds", "elapsed_seconds", "cpus")),
        busy=Sum(busy, filter=_both("cpu_seconds", "elapsed_seconds", "cpus")),
        rss_count=Count("max_rss_mib"),
        rss_peak=Max("max_rss_mib"),
        memory_share=Avg(memory_share, filter=_both("max_rss_mib", "memory_mib")),
        elapsed_count=Count("elapsed_seconds"),
        elapsed_min=Min("elapsed_seconds"),
        elapsed_max=Max("elapsed_seconds"),
        elapsed_total=Sum("elapsed_seconds"),
    )
    if not in_one_pass:
        totals["rss_median"] = _median(attempts, "max_rss_mib", totals["rss_count"])
        totals["elapsed_median"] = _median(attempts, "elapsed_seconds", totals["elapsed_count"])
    codes = dict(attempts.values_list("reason_code").annotate(n=Count("pk")).order_by("reason_code"))
    jobs_ended = batch.jobs.filter(status__in=TERMINAL).count()
    return {
        "batch_id": batch.pk,
        "jobs_ended": jobs_ended,
        "attempts": totals["count"],
        "cpus": batch.cpu,
        "memory_mib": batch.memory,
        "cpu_seconds": _round(totals["cpu_total"]),
        "cpu_efficiency": _ratio(totals["measured_cpu"], totals["busy"]),
        "max_rss_mib": {"peak": totals["rss_peak"], "median": totals["rss_median"]},
        "memory_efficiency": round(totals["memory_share"], 4) if totals["memory_share"] is not None else None,
        "elapsed_seconds": {
            "min": totals["elapsed_min"],
            "median": _round(totals["elapsed_median"]),
            "max": totals["elapsed_max"],
            "total": _round(totals["elapsed_total"]),
        },
        "reason_codes": {code or "": n for code, n in codes.items()},
    }


# Upper bounds of the buckets of the per-tool histograms (`/metrics`); each has +Inf too.
CPU_SECONDS_BUCKETS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0)
MAX_RSS_MIB_BUCKETS = (16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0)


class Histogram(NamedTuple):
    cumulative: list[int]  # attempts at or below each bound of its buckets
    count: int  # attempts measured (the +Inf bucket)
    total: float  # the sum of their figures


def recent_usage_by_tool(*, since: datetime) -> dict[str, dict[str, Histogram]]:
    """Per tool name, histograms of the cpu-seconds (`cpu_seconds`) and the peak RSS
    in MiB (`max_rss_mib`) of the attempts that ended since `since`, in one GROUP BY
    query (what `/metrics` shows)."""
    figures = {"cpu_seconds": CPU_SECONDS_BUCKETS, "max_rss_mib": MAX_RSS_MIB_BUCKETS}
    aggregates: dict[str, Any] = {}
    for field, bounds in figures.items():
        for i, bound in enumerate(bounds):
            aggregates[f"{field}_le{i}"] = Count("pk", filter=Q(**{f"{field}__lte": bound}))
        aggregates[f"{field}_n"] = Count(field)
        aggregates[f"{field}_sum"] = Sum(field)
    rows = Attempt.objects.filter(end_time__gte=since).order_by().values("job__batch__tool__name").annotate(**aggregates)
    return {
        row["job__batch__tool__name"]: {
            field: Histogram([row[f"{field}_le{i}"] for i in range(len(bounds))], row[f"{field}_n"], float(row[f"{field}_sum"] or 0.0))
            for field, bounds in figures.items()
        }
        for row in rows
    }


def _both(*fields: str) -> Q:
    """Attempts where each of `fields` was measured."""
    condition = Q()
    for field in fields:
        condition &= Q(**{f"{field}__isnull": False})
    return condition


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
