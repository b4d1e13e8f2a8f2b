"""WSGI entry point (gunicorn -c batchsite/gunicorn.conf.py batchsite.wsgi).

Django reads a request body only up to its Content-Length, so a chunked body (no
Content-Length) reached the API as empty and was refused as "tool_id: This field is
required". `application` reads such a body here, up to BATCHES_MAX_REQUEST_BYTES, when
the server has de-chunked it (`wsgi.input_terminated`, as gunicorn does); a server that
cannot gets a 411 problem asking for a Content-Length.
"""

import io
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")

django_application = get_wsgi_application()


def _problem(start_response: Callable, status: int, detail: str) -> list[bytes]:
    from core.problems import PROBLEM_CONTENT_TYPE, problem_body  # once Django is set up

    problem = problem_body(status, detail)
    body = json.dumps(problem).encode()
    start_response(f"{status} {problem['title']}", [("Content-Type", PROBLEM_CONTENT_TYPE), ("Content-Length", str(len(body)))])
    return [body]


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and not environ.get("CONTENT_LENGTH"):
        if not environ.get("wsgi.input_terminated"):
            return _problem(start_response, 411, "Send the body with a Content-Length header.")
        from django.conf import settings

        limit = settings.BATCHES_MAX_REQUEST_BYTES
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            return _problem(start_response, 413, f"The request body is larger than {limit} bytes.")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
    return django_application(environ, start_response)
