"""`GET /events`: the caller's job state changes and finished batches, in order (the
feed, `jobs.feed`). Always the caller's own, an operator's token included: operators
see everyone's jobs in the admin."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from core.problems import Gone
from jobs.api.serializers import FeedEventSerializer
from jobs.feed import CursorGone, as_feed_event, wait_for_events

LONGEST_WAIT = 60
LARGEST_ID = 2**63 - 1


def _whole(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # Plain ASCII digits only (int() takes "²" and "_"), at most 19 of them.
    if not raw.isascii() or not raw.isdigit():
        raise ValidationError({name: [f"must be a whole number, not {raw!r}"]})
    value = int(raw) if len(raw.lstrip("0")) <= 19 else 2**64  # int() refuses 4,300+ digits
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValidationError({name: [f"must be {bound}, not {value}"]})
    return value


class EventFeedView(APIView):
    @extend_schema(
        operation_id="list_events",
        summary="The caller's job state changes and finished batches, in order (the event feed)",
        description=(
            "Every state change of the caller's jobs (`job.<status>`) and a `batch.finished` event each time a batch's "
            "last job ends (with its jobs per status, written within a second or so by the workers' housekeeping), "
            "oldest first, as a bare array. Resume with `?after=` the last `id` you processed: no event is skipped or "
            'repeated. The next page is named in the `Link: <...>; rel="next"` header when the page is full. '
            "`wait=S` (up to 60 s) holds the request until an event arrives or S seconds pass (then `[]`). "
            "Events are kept BATCHES_EVENTS_RETENTION_DAYS (default 30): a cursor from before that answers 410. "
            "An operator's token reads the operator's own events, like every list."
        ),
        parameters=[
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": LARGEST_ID},
                description="Only events with a larger id (default 0: from the oldest kept).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                description=f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
            ),
            OpenApiParameter(
                "wait",
                {"type": "integer", "minimum": 0, "maximum": LONGEST_WAIT},
                description="Seconds to wait for an event when there is none yet (a long poll; default 0).",
            ),
        ],
        responses={
            200: OpenApiResponse(
                FeedEventSerializer(many=True),
                description="The events. `X-Events-Through`: resume from this id to skip nothing of yours (on an "
                "empty page, where the feed stands now: a client may start there to follow only what comes next; "
                "it is never past that point, so `after` set to the largest id asks where the feed stands).",
            ),
            410: OpenApiResponse(description="The cursor is older than the retention: events after it were removed."),
        },
    )
    def get(self, request: Request) -> Response:
        after = _whole(request, "after", 0, 0, LARGEST_ID)
        limit = _whole(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        wait = min(_whole(request, "wait", 0, 0, LONGEST_WAIT), settings.BATCHES_EVENTS_MAX_WAIT)
        try:
            page = wait_for_events(user=request.user, after=after, limit=limit + 1, wait=wait)
        except CursorGone as exc:
            raise Gone(str(exc)) from exc
        rows = page.rows
        headers = {"X-Events-Through": str(page.through)}
        if len(rows) > limit:
            rows = rows[:limit]
            headers["X-Events-Through"] = str(rows[-1]["id"])
            url = replace_query_param(request.build_absolute_uri(), "after", rows[-1]["id"])
            headers["Link"] = f'<{replace_query_param(url, "limit", limit)}>; rel="next"'
        return Response(FeedEventSerializer([as_feed_event(row) for row in rows], many=True).data, headers=headers)
