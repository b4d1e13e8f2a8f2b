"""RFC 9457 problem details: the one shape every error of the service takes.

`{"type", "title", "status", "detail"}` always; a 400 adds `errors`, a list of
`{"field", "message"}` with dotted/indexed field paths (`jobs[3].args.message`), and its
`detail` repeats the first of them so a person reading only `detail` knows what to fix.
"""

import logging
import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from core.renderers import FastJSONRenderer

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Database errors that mean "try again later" (503), as opposed to a bug (500).
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)

# How SQLite and PostgreSQL say a table is missing: the schema is behind the code (an
# upgrade that did not run `migrate`), which no retry mends.
_MISSING_TABLE = (re.compile(r"no such table: ([\w.]+)"), re.compile(r'relation "([^"]+)" does not exist'))


def missing_table(exc: BaseException) -> str | None:
    """The name of the table a database error says does not exist, or None when the
    error is anything else."""
    if not isinstance(exc, DatabaseError):
        return None
    for pattern in _MISSING_TABLE:
        found = pattern.search(str(exc))
        if found:
            return found.group(1)
    return None


def schema_behind_detail(table: str) -> str:
    """What a person is told when a table is missing: which one, and the command."""
    return f"The database has no table {table}: its schema is behind the code. An operator must run `python manage.py migrate`."


class SchemaBehind(exceptions.APIException):
    status_code = 500
    default_detail = "The database's schema is behind the code."


_TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    410: "Gone",
    411: "Length required",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}

_TYPES = {
    400: "validation-error",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    410: "gone",
    411: "length-required",
    413: "too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "throttled",
    500: "internal-error",
    503: "unavailable",
}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's current state."
    default_code = "conflict"


class Gone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "What the request names has been removed for good."
    default_code = "gone"


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request is well-formed but cannot be carried out."
    default_code = "unprocessable"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is unavailable; try again shortly."
    default_code = "unavailable"


def problem_body(status_code: int, detail: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:batches:problem:{_TYPES.get(status_code, 'error')}",
        "title": _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(status_code: int, detail: str, errors: list[dict[str, str]] | None = None) -> JsonResponse:
    """A plain Django response, for code that runs outside DRF (middleware, handlers)."""
    return JsonResponse(
        problem_body(status_code, detail, errors),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def flatten_errors(data: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn DRF's nested error structure into [{"field": "jobs[3].args.x", "message": ...}]."""
    if isinstance(data, dict):
        out: list[dict[str, str]] = []
        for key, value in data.items():
            if key == "non_field_errors":
                path = prefix or "body"
            elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_errors(value, path))
        return out
    if isinstance(data, list):
        if data and all(not isinstance(item, (dict, list)) for item in data):
            return [{"field": prefix or "body", "message": str(item)} for item in data]
        out = []
        for index, item in enumerate(data):
            if item in ({}, [], None, ""):
                continue
            out.extend(flatten_errors(item, f"{prefix}[{index}]"))
        return out
    return [{"field": prefix or "body", "message": str(data)}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every API error as problem+json."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, DjangoValidationError):
        # Services raise Django's ValidationError keyed by field path.
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"body": exc.messages})
    elif (table := missing_table(exc)) is not None:
        logger.error("database table %s is missing: run `python manage.py migrate`", table)
        exc = SchemaBehind(schema_behind_detail(table))
    elif isinstance(exc, UNAVAILABLE_ERRORS):
        # The server is down, unreachable or locked; other database errors (bad data,
        # integrity) are bugs and stay 500s.
        logger.exception("database error while serving an API request")
        exc = ServiceUnavailable("The database is unavailable; try again shortly.")
        exc.wait = 5  # type: ignore[attr-defined]

    if not isinstance(exc, exceptions.APIException):
        return None  # Django's handler500 answers with a problem too.

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(max(1, int(wait)))

    errors = None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        first = errors[0] if errors else {"field": "body", "message": "Invalid input."}
        detail = f"{first['field']}: {first['message']}"
    elif isinstance(exc, exceptions.ParseError):
        detail = str(exc.detail)
        errors = [{"field": "body", "message": detail}]
    else:
        detail = (
            str(exc.detail)
            if not isinstance(exc.detail, (dict, list))
            else "; ".join(f"{e['field']}: {e['message']}" for e in flatten_errors(exc.detail))
        )
    status_code = exc.status_code
    if isinstance(exc, exceptions.ParseError):
        status_code = 400
    request = context.get("request")
    if request is not None and getattr(getattr(request, "accepted_renderer", None), "format", None) != "json":
        # A view that renders something else (the schema's YAML), or whose negotiation
        # failed, still answers its errors in JSON, as their content type says.
        request.accepted_renderer, request.accepted_media_type = FastJSONRenderer(), PROBLEM_CONTENT_TYPE
    return Response(
        problem_body(status_code, detail, errors),
        status=status_code,
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )
