"""Liveness and readiness probes."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from jobs.executors import Probes, get_executor_class
from jobs.policy import isolation_required, missing_parts
from jobs.selectors import combined_isolation, live_worker_reports


@csrf_exempt  # no state changes: other methods get a 405, not a CSRF 403
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; checks nothing else."""
    return JsonResponse({"status": "ok"})


@csrf_exempt  # no state changes: other methods get a 405, not a CSRF 403
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database answers a query and the configured executor is usable;
    503 otherwise. `workers` counts live workers, for operators: none running is not a
    reason to stop taking submissions (they wait, SUBMITTED, for a worker). `isolation`
    says which parts seal the jobs of every live worker (job accounts, sandbox, cgroup
    memory, pids and cpu). Where sealing is required (BATCHES_REQUIRE_ISOLATION here, or
    the deployment's policy), a live worker without one is named: it gets no jobs."""
    checks = {"database": "ok", "executor": "ok"}
    workers = None
    isolation: dict[str, bool] = {}
    required = settings.BATCHES_REQUIRE_ISOLATION
    unsealed: list[str] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        reports = live_worker_reports()  # one query for the count, the parts and the names
        workers = len(reports)
        isolation = combined_isolation(reports)
        if required or isolation_required(fresh=True):
            lacking = [(name, missing_parts(report)) for name, report in reports]
            unsealed = [f"{name} (missing: {', '.join(parts)})" for name, parts in lacking if parts]
    except DatabaseError as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    try:
        executor_class = get_executor_class()
        # Only a backend that can tell (Probes) is asked; the others are ready with their worker.
        problem = executor_class.check_ready() if issubclass(executor_class, Probes) else None
    except ImproperlyConfigured as exc:
        problem = str(exc)
    if problem:
        checks["executor"] = f"unavailable: {problem}"
    if unsealed:
        checks["isolation"] = (
            f"sealed jobs are required and these live workers cannot seal them, so they get no jobs: {'; '.join(unsealed)}"
        )
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks, "workers": workers, "isolation": isolation}
    return JsonResponse(body, status=200 if ready else 503)
