"""Prometheus metrics (`GET /metrics`), with the standard client library.

Most figures are read from the database at each scrape, so every web process answers
the same and nothing is lost when one restarts: jobs per state, queue depth and the
oldest waiting job, job durations of the last hour, the cpu-seconds and peak memory of
the attempts that ended in the last hour per tool (gauge histograms: a window, not a
running count), workers per state and the age of each live worker's heartbeat. Submissions are counted where they happen (the web
processes); under gunicorn their counts are shared through prometheus_client's
multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (batchsite/gunicorn.conf.py sets
it up).

Who may scrape: a request carrying `Authorization: Bearer <BATCHES_METRICS_TOKEN>`, or
one whose peer address (REMOTE_ADDR, the connection's, never X-Forwarded-For) is in a
network the operator lists in BATCHES_METRICS_ALLOW. Nobody else, loopback included:
behind a reverse proxy on the same machine every request comes from loopback.
"""

import hmac
import ipaddress
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, F
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from core.problems import problem_response
from jobs.api.batch_views import SUBMISSIONS, SUBMITTED_JOBS
from jobs.models import Job, Worker
from jobs.selectors import jobs_per_state, oldest_waiting_since
from jobs.statuses import QUEUED, Status
from jobs.usage_report import CPU_SECONDS_BUCKETS, MAX_RSS_MIB_BUCKETS, recent_usage_by_tool

_DURATION_WINDOW = timedelta(hours=1)
_DURATION_SAMPLE = 10_000  # most recent finished jobs a scrape looks at
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DatabaseCollector(Collector):
    """What the database says now."""

    def collect(self) -> Iterator[GaugeMetricFamily | SummaryMetricFamily | GaugeHistogramMetricFamily]:
        now = timezone.now()
        counts = jobs_per_state()
        jobs = GaugeMetricFamily("batches_jobs", "Jobs per state.", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(
            "batches_queue_depth", "Jobs waiting to run (SUBMITTED, PENDING, RUNNABLE).", value=sum(counts[s] for s in QUEUED)
        )
        yield GaugeMetricFamily(
            "batches_oldest_waiting_seconds", "Age of the oldest job waiting to run (0: none waits).", value=_oldest_wait(now)
        )
        yield _durations(now)
        yield from _usage_histograms(now)
        workers = GaugeMetricFamily("batches_workers", "Workers per state.", labels=["state"])
        by_state = dict.fromkeys(Worker.State.values, 0)
        by_state.update(Worker.objects.order_by().values_list("state").annotate(n=Count("*")))
        for state, n in by_state.items():
            workers.add_metric([state], n)
        yield workers
        heartbeat = GaugeMetricFamily(
            "batches_worker_heartbeat_age_seconds", "Seconds since each active worker's last heartbeat.", labels=["worker", "executor"]
        )
        for name, executor, beat in Worker.objects.filter(state=Worker.State.ACTIVE).values_list("name", "executor", "heartbeat_at"):
            heartbeat.add_metric([name, executor], max(0.0, (now - beat).total_seconds()))
        yield heartbeat


def _oldest_wait(now: datetime) -> float:
    oldest = oldest_waiting_since()
    return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0


def _durations(now: datetime) -> SummaryMetricFamily:
    finished = (
        Job.objects.filter(status__in=[Status.SUCCEEDED, Status.FAILED], stop_time__gte=now - _DURATION_WINDOW, start_time__isnull=False)
        .order_by("-stop_time")
        .annotate(took=F("stop_time") - F("start_time"))
        .values_list("took", flat=True)[:_DURATION_SAMPLE]
    )
    seconds = [took.total_seconds() for took in finished]
    summary = SummaryMetricFamily(
        "batches_job_duration_seconds", "Run time of the jobs that finished in the last hour (at most the last 10,000).", labels=[]
    )
    summary.add_metric([], count_value=len(seconds), sum_value=sum(seconds))
    return summary


def _usage_histograms(now: datetime) -> Iterator[GaugeHistogramMetricFamily]:
    """What the attempts that ended in the last hour used, per tool (jobs.usage_report)."""
    by_tool = recent_usage_by_tool(since=now - _DURATION_WINDOW)
    cpu = GaugeHistogramMetricFamily(
        "batches_attempt_cpu_seconds", "cpu-seconds (user + system) of the attempts that ended in the last hour, per tool.", labels=["tool"]
    )
    rss = GaugeHistogramMetricFamily(
        "batches_attempt_max_rss_bytes", "Peak resident memory of the attempts that ended in the last hour, per tool.", labels=["tool"]
    )
    for tool, histograms in sorted(by_tool.items()):
        for family, field, bounds, scale in (
            (cpu, "cpu_seconds", CPU_SECONDS_BUCKETS, 1.0),
            (rss, "max_rss_mib", MAX_RSS_MIB_BUCKETS, float(1 << 20)),
        ):
            histogram = histograms[field]
            buckets = [(floatToGoString(bound * scale), n) for bound, n in zip(bounds, histogram.cumulative, strict=True)]
            family.add_metric([tool], [*buckets, ("+Inf", histogram.count)], gsum_value=histogram.total * scale)
    yield cpu
    yield rss


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # the submission counters of every web process
    else:
        registry.register(SUBMISSIONS)
        registry.register(SUBMITTED_JOBS)
    return registry


@lru_cache(maxsize=8)
def allowed_networks(value: str) -> tuple[Network, ...]:
    """BATCHES_METRICS_ALLOW's networks: comma-separated CIDRs (`127.0.0.1/32,::1/128`);
    empty: none. A malformed one (or one with host bits set, as `10.0.0.5/8`, which
    would allow more than it seems to) is a configuration error."""
    networks = []
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip()))
        except ValueError as error:
            raise ImproperlyConfigured(f"BATCHES_METRICS_ALLOW: {item.strip()!r} is not a network in CIDR form ({error})") from None
    return tuple(networks)


def _token_sent(request: HttpRequest, token: str) -> bool:
    sent = request.headers.get("Authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def _peer_allowed(request: HttpRequest) -> bool:
    networks = allowed_networks(settings.BATCHES_METRICS_ALLOW)
    if not networks:
        return False
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
        peer = peer.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return any(peer in network for network in networks)


def _allowed(request: HttpRequest) -> bool:
    token = settings.BATCHES_METRICS_TOKEN
    return bool(token and _token_sent(request, token)) or _peer_allowed(request)


@csrf_exempt  # no state changes: other methods get a 405, not a CSRF 403
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        if settings.BATCHES_METRICS_TOKEN:
            detail = "Send Authorization: Bearer <BATCHES_METRICS_TOKEN>."
        else:
            detail = "Metrics need BATCHES_METRICS_TOKEN (sent as Authorization: Bearer), or this address in BATCHES_METRICS_ALLOW."
        return problem_response(403, detail)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
