"""A request id for every request, and one log line per request.

The id is the client's `X-Request-ID` when it sent a sane one (letters, digits, `.-_:`,
at most 128), else a new one; it comes back in the response's `X-Request-ID` header and
is on every log record written while the request is served (`request_id`), so a user's
report and the server's logs meet. With LOG_FORMAT=json each record is one JSON object
(python-json-logger) with that field; `batchsite.requests` logs method, path, status,
duration and user per request: every request, or with LOG_REQUESTS=changes (`make run`'s
console) only writes and errors, so a client polling once a second does not bury the
worker's messages."""

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_current: ContextVar[str] = ContextVar("request_id", default="")
access = logging.getLogger("batchsite.requests")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def current_request_id() -> str:
    return _current.get()


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being served (or "") on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get()
        return True


def _known_user_id(request: HttpRequest) -> object:
    """The id of the user the request was served for, if it is known already: never a
    look-up of its own (a session read when the database is down would fail the answer)."""
    user = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject):
        user = request.__dict__.get("_cached_user")  # set once Django has looked it up
    return getattr(user, "pk", None)


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.headers.get(HEADER, "")
        request_id = sent if _SANE.match(sent) else uuid.uuid4().hex
        # Not reset when this returns: Django writes its own line about a 4xx or 5xx
        # answer ('Not Found: ...') after the middleware, and it must carry the id too.
        # The id is cleared once the answer is done (request_finished, below).
        _current.set(request_id)
        started = time.perf_counter()
        response = self.get_response(request)
        response[HEADER] = request_id
        if settings.LOG_REQUESTS == "changes" and request.method in _READS and response.status_code < 400:
            return response  # a console that a polling client would bury (make run)
        access.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "user_id": _known_user_id(request),
            },
        )
        return response


@receiver(request_finished)
def _forget_request_id(**_: object) -> None:
    _current.set("")
