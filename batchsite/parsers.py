"""Request parsing with a hard size cap.

DRF reads the body from the request stream, which bypasses Django's
DATA_UPLOAD_MAX_MEMORY_SIZE check; this parser reads at most the configured number of
bytes (even for chunked bodies with no Content-Length) and answers 413 past it.
"""

import json
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core.problems import PayloadTooLarge

# Only a \uD800-\uDFFF escape can put a lone surrogate into a parsed string (UTF-8
# bytes cannot); such a string is no text, and no database or renderer will take it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.BATCHES_MAX_REQUEST_BYTES
        if stream is None:
            raise ParseError("The request body is empty; send a JSON object.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        if not raw.strip():
            raise ParseError("The request body is empty; send a JSON object.")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_hook=_ObjectBudget(_max_objects()))
        except UnicodeDecodeError:
            raise ParseError("The request body is not UTF-8.") from None
        except RecursionError:
            raise ParseError("The request body is nested too deeply.") from None
        except ValueError as exc:
            if "integer string conversion" in str(exc):  # Python's own limit, not JSON's
                raise ParseError("The request body holds an integer of more than 4300 digits.") from None
            raise ParseError(f"The request body is not valid JSON: {exc}") from None
        if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(data):
            raise ParseError("The request body contains a lone UTF-16 surrogate escape (\\uD800-\\uDFFF), which is not a character.")
        return data


def _max_objects() -> int:
    """The most JSON objects a valid body holds: a submission has two per job (the job
    and its args) and a few more."""
    return 2 * settings.BATCHES_MAX_JOBS_PER_BATCH + 64


class _ObjectBudget:
    """An object_hook that stops the parse once the body holds more objects than any
    valid request: 10 million `{}` fit in the body cap, and building them cost a minute
    and over a GiB before any check could run."""

    def __init__(self, budget: int) -> None:
        self.left = budget

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.left -= 1
        if self.left < 0:
            raise PayloadTooLarge(
                f"The request body holds more JSON objects than any valid request; a batch has at most "
                f"{settings.BATCHES_MAX_JOBS_PER_BATCH} jobs."
            )
        return obj


def _has_lone_surrogate(data: Any) -> bool:
    stack = [data]  # iterative: the document may be nested as deep as json allows
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
