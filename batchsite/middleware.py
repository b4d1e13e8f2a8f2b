"""Middleware that keeps every answer JSON, even when Django itself fails."""

import logging
from collections.abc import Callable

from django.conf import settings
from django.contrib.admin.views.main import ERROR_FLAG
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from core.problems import UNAVAILABLE_ERRORS, missing_table, problem_response, schema_behind_detail

logger = logging.getLogger(__name__)


_DETAILS = {
    400: "The request could not be understood.",
    403: "You may not do this.",
    404: "No route or resource at this address.",
    405: "This method is not allowed here.",
    500: "The server failed to answer; the error has been logged.",
}


class ProblemMiddleware:
    """Refuses oversized bodies early and turns a database outage into 503 JSON.

    DRF views already answer their own errors as problems; this catches what happens
    outside them (sessions, the admin, health checks) so no route ever shows an HTML
    error page or a traceback.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.BATCHES_MAX_REQUEST_BYTES
        if length.isdigit() and int(length) > limit:
            return problem_response(413, f"The request body is larger than {limit} bytes.")
        refused = _refused_query(request)
        if refused is not None:
            return refused
        try:
            response = self.get_response(request)
        except DatabaseError as error:
            # Raised by middleware below us (sessions, auth) rather than by a view.
            answer = _database_problem(request, error)
            if answer is None:
                raise
            return answer
        if (
            response.status_code >= 400
            and response.get("Content-Type", "").startswith("text/html")
            and not request.path.startswith("/admin/")
        ):
            # Django's own pages (the DEBUG 404 and 500 pages above all) become problems;
            # the admin keeps its HTML.
            problem = problem_response(response.status_code, _DETAILS.get(response.status_code, "The request failed."))
            if response.has_header("Allow"):
                problem["Allow"] = response["Allow"]  # a 405 must say what is allowed
            return problem
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return _database_problem(request, exception)


def _database_problem(request: HttpRequest, error: BaseException) -> HttpResponse | None:
    """A missing table (the schema is behind the code) as a 500 that names it and the
    command that mends it; an outage as a 503 to retry; None for anything else."""
    table = missing_table(error)
    if table is not None:
        logger.error("database table %s is missing while serving %s: run `python manage.py migrate`", table, request.path)
        return problem_response(500, schema_behind_detail(table))
    if isinstance(error, UNAVAILABLE_ERRORS):
        logger.exception("database error while serving %s", request.path)
        return _unavailable()
    return None


# Query parameters a route takes more than once (its views read every value).
REPEATABLE = {"/ga4gh/tes/v1/tasks": ("tag_key", "tag_value"), "/ga4gh/tes/v1/tasks/": ("tag_key", "tag_value")}


def _refused_query(request: HttpRequest) -> HttpResponse | None:
    """No query parameter may hold a NUL: PostgreSQL's text cannot, and a filter that
    reached a query with one was a 500. The admin gets its own notice about a wrong
    filter (?e=1), the API a 400 naming the parameter. Nor may an API parameter come
    twice (`?limit=1&limit=2`, `?status=A&status=B`): one of them would silently lose;
    except the TES list's tags, which the GA4GH spec gives as repeated pairs."""
    for key, values in request.GET.lists():
        repeatable = key in REPEATABLE.get(request.path, ())
        if len(values) > 1 and not repeatable and not request.path.startswith("/admin/"):
            return problem_response(400, f"{key} is given {len(values)} times.", [{"field": key, "message": "give it once"}])
        if "\x00" in key or any("\x00" in value for value in values):
            if request.path.startswith("/admin/"):
                return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
            field = key.replace("\x00", "\\0")
            return problem_response(
                400, "A query parameter holds a NUL character.", [{"field": field, "message": "must not contain a NUL character"}]
            )
    return None


def _unavailable() -> HttpResponse:
    response = problem_response(503, "The database is unavailable; try again shortly.")
    response["Retry-After"] = "5"
    return response


class TrailingSlashMiddleware:
    """Serve the API's routes with or without a trailing slash, without a redirect
    (a redirected DELETE or POST would lose its method or body). The admin and the
    schema keep Django's slashed URLs."""

    _KEEP = ("/admin/", "/api/", "/static/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if len(path) > 1 and path.endswith("/") and not path.startswith(self._KEEP):
            # One slash only: `/batches//` (or `/batches/%2F`) is an id left empty, not
            # `/batches`. The views that act on everything see that a slash was taken off
            # (`DELETE /batches/$ID` with $ID empty must not delete every batch).
            request.path_info = path[:-1]
            request.trailing_slash_removed = True
        return self.get_response(request)
