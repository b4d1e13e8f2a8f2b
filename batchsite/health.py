"""Liveness and readiness probes."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from jobs.executors import get_executor_class
from jobs.selectors import live_worker_count, live_worker_isolation


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
    says which parts seal the jobs of every live local worker (job user, sandbox, cgroup
    memory and pids); with BATCHES_REQUIRE_ISOLATION a live worker without one is a
    reason to be unready."""
    checks = {"database": "ok", "executor": "ok"}
    workers = None
    isolation: dict[str, bool] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        workers = live_worker_count()
        isolation = live_worker_isolation()
    except DatabaseError as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    try:
        problem = get_executor_class().check_ready()
    except ImproperlyConfigured as exc:
        problem = str(exc)
    if problem:
        checks["executor"] = f"unavailable: {problem}"
    lacking = [part for part, in_force in isolation.items() if not in_force]
    if lacking and settings.BATCHES_REQUIRE_ISOLATION:
        checks["isolation"] = f"a live worker runs jobs without: {', '.join(lacking)}"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks, "workers": workers, "isolation": isolation}
    return JsonResponse(body, status=200 if ready else 503)
