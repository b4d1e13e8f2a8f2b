"""GA4GH TES v1.1 under /ga4gh/tes/v1 (`tes.urls`): the spec's routes and shapes, on
our tokens (Bearer, or HTTP Basic with the token as the password), jobs and workers.
Errors are problem documents like the rest of the API. These routes are described by
GA4GH's own OpenAPI file, not by ours (`GET /api/schema/`)."""

from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import BasicTokenAuthentication, BearerTokenAuthentication
from ga4gh.models import TaskRecord
from ga4gh.render import render_task
from ga4gh.selectors import after_token, attempts_of, filtered, find_task, page_token, user_tasks
from ga4gh.services import cancel_task, create_task
from ga4gh.states import STATES

VIEWS = ("MINIMAL", "BASIC", "FULL")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 256, 2047  # "must be less than 2048; defaults to 256"
VERSION = "1.1.0"


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError({name: ["given more than once"]})
    return values[0] if values else None


def _view(request: Request) -> str:
    view = _one(request, "view") or "MINIMAL"
    if view not in VIEWS:
        raise ValidationError({"view": [f"must be one of {', '.join(VIEWS)}, not {view!r}"]})
    return view


class TesView(APIView):
    authentication_classes = [BearerTokenAuthentication, BasicTokenAuthentication]


@extend_schema(exclude=True)
class ServiceInfoView(TesView):
    def get(self, request: Request) -> Response:
        return Response(
            {
                "id": "org.batches.tes",
                "name": "batches TES",
                "type": {"group": "org.ga4gh", "artifact": "tes", "version": VERSION},
                "description": "GA4GH TES on the batch-compute service: tasks run sealed, fair-shared and accounted like every job.",
                "organization": {"name": settings.BATCHES_TES_ORGANIZATION, "url": settings.BATCHES_TES_ORGANIZATION_URL},
                "version": VERSION,
                "storage": ["file:///"],
                "tesResources_backend_parameters": [],
            }
        )


@extend_schema(exclude=True)
class TaskListView(TesView):
    def get(self, request: Request) -> Response:
        view = _view(request)
        raw_size = _one(request, "page_size")
        if raw_size is None:
            size = DEFAULT_PAGE_SIZE
        elif not raw_size.isascii() or not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
            raise ValidationError({"page_size": [f"must be a whole number from 1 to {MAX_PAGE_SIZE}, not {raw_size!r}"]})
        else:
            size = int(raw_size)
        state = _one(request, "state")
        if state is not None and state not in STATES:
            raise ValidationError({"state": [f"must be one of {', '.join(STATES)}, not {state!r}"]})
        keys, values = request.query_params.getlist("tag_key"), request.query_params.getlist("tag_value")
        if len(values) > len(keys):
            raise ValidationError({"tag_value": ["each tag_value needs a tag_key before it"]})
        tags = {key: values[n] if n < len(values) else "" for n, key in enumerate(keys)}
        tasks = filtered(user_tasks(user=request.user), name_prefix=_one(request, "name_prefix"), state=state, tags=tags)
        token = _one(request, "page_token")
        if token:
            tasks = after_token(tasks, token)
            if tasks is None:
                raise ValidationError({"page_token": ["is not a next_page_token this service gave"]})
        page = list(tasks[: size + 1])
        more, page = len(page) > size, page[:size]
        attempts = attempts_of(page) if view != "MINIMAL" else {}
        body: dict[str, Any] = {"tasks": [render_task(r, view=view, attempts=attempts.get(r.job_id, [])) for r in page]}
        if more:
            body["next_page_token"] = page_token(page[-1])
        return Response(body)

    def post(self, request: Request) -> Response:
        record = create_task(user=request.user, document=request.data)
        return Response({"id": str(record.pk)})


def _task(request: Request, task_id: str) -> TaskRecord:
    record = find_task(user=request.user, task_id=task_id)
    if record is None:
        raise Http404(f"no task {task_id}")
    return record


@extend_schema(exclude=True)
class TaskDetailView(TesView):
    def get(self, request: Request, task_id: str) -> Response:
        view = _view(request)
        record = _task(request, task_id)
        attempts = attempts_of([record]).get(record.job_id, []) if view != "MINIMAL" else []
        return Response(render_task(record, view=view, attempts=attempts))


@extend_schema(exclude=True)
class TaskCancelView(TesView):
    def post(self, request: Request, task_id: str) -> Response:
        cancel_task(user=request.user, record=_task(request, task_id))
        return Response({})
