"""Keyset pagination, GitHub style: the body stays a bare JSON array, `?limit=` sets the
page size (default 100, max 1000), and the next page is named in a
`Link: <...>; rel="next"` header carrying an opaque cursor.

The cursor holds the last row's key, so page N costs the same as page 1 (no OFFSET)
and rows inserted meanwhile never shift a page. Views name their unique, ordered key
in `cursor_field`.
"""

import base64
import binascii
import json
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([str(value) if not isinstance(value, int) else value]).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        (value,) = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValidationError({"cursor": ["is not a cursor this service gave out; start again without it"]}) from None
    # Cursors hold ids and names, never NUL (which PostgreSQL refuses in any string).
    if not isinstance(value, (str, int)) or isinstance(value, bool) or (isinstance(value, str) and "\x00" in value):
        raise ValidationError({"cursor": ["is not a cursor this service gave out; start again without it"]})
    return value


class KeysetPagination(BasePagination):
    limit_query_param = "limit"
    cursor_query_param = "cursor"

    def __init__(self) -> None:
        self.next_url: str | None = None

    def get_limit(self, request: Request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return DEFAULT_LIMIT
        try:
            limit = int(raw)
        except ValueError:
            raise ValidationError({"limit": [f"must be an integer between 1 and {MAX_LIMIT}, not {raw!r}"]}) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError({"limit": [f"must be between 1 and {MAX_LIMIT}, not {limit}"]})
        return limit

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        field = view.cursor_field
        limit = self.get_limit(request)
        queryset = queryset.order_by(field)
        raw_cursor = request.query_params.get(self.cursor_query_param)
        if raw_cursor:
            try:
                queryset = queryset.filter(**{f"{field}__gt": _decode(raw_cursor)})
            except (ValueError, TypeError, ValidationError, DjangoValidationError):
                # DjangoValidationError: a well-formed cursor holding, say, no UUID.
                raise ValidationError({"cursor": ["is not a cursor this service gave out; start again without it"]}) from None
        rows = list(queryset[: limit + 1])
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1][field] if isinstance(rows[-1], dict) else getattr(rows[-1], field)
            url = request.build_absolute_uri()
            url = replace_query_param(url, self.cursor_query_param, _encode(last))
            self.next_url = replace_query_param(url, self.limit_query_param, limit)
        return rows

    def get_paginated_response(self, data: Any) -> Response:
        headers = {"Link": f'<{self.next_url}>; rel="next"'} if self.next_url else {}
        return Response(data, headers=headers)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return schema  # a bare array; the next page is in the Link header

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": 'Opaque cursor from the previous page\'s `Link: <...>; rel="next"` header.',
                "schema": {"type": "string"},
            },
        ]
