"""Batch routes: submit, list, count and delete. Views parse, call one service or
selector, and shape the answer; every read is scoped to request.user."""

import hashlib
import json
import re

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from prometheus_client import Counter
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batches.api.serializers import (
    BatchSerializer,
    BatchSubmissionSerializer,
    batch_representation,
)
from batches.models import Batch
from batches.selectors import (
    dependencies_of_page,
    filesystems_of_page,
    get_user_batch,
    user_batch_rows,
    user_batches,
)
from core.pagination import KeysetPagination
from core.problems import Unprocessable
from jobs.api.serializers import BatchStatusSerializer, BatchUsageSerializer
from jobs.counts import user_batch_status_counts
from jobs.removal import delete_batches
from jobs.submission import IdempotencyKeyReused, submit_batch, submit_batch_once
from jobs.usage_report import batch_usage

# Counted where they happen (the web processes); batchsite/metrics.py exposes them.
SUBMISSIONS = Counter("batches_submissions", "Batches submitted through the API.")
SUBMITTED_JOBS = Counter("batches_submitted_jobs", "Jobs in the batches submitted through the API.")


def count_submission(*, jobs: int) -> None:
    SUBMISSIONS.inc()
    SUBMITTED_JOBS.inc(jobs)


_KEY_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY_RE.match(key):
        raise ValidationError({"Idempotency-Key": ["must be 1 to 255 printable ASCII characters, not starting with a space"]})
    return key


def _fingerprint(body: object) -> str:
    """The body as canonical JSON (key order and spacing do not matter), hashed."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


DELETED = (
    "Answers at once whatever the size: the batch is gone from every route (404) when the answer comes, its "
    "running jobs are stopped, and its jobs, events and logs are removed in the background."
)


NOT_FOUND = OpenApiResponse(description="No such batch for this user (another user's batch is also 404).")


class BatchListView(generics.GenericAPIView):
    serializer_class = BatchSerializer
    pagination_class = KeysetPagination
    cursor_field = "id"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Batch.objects.none()
        return user_batches(user=self.request.user)

    @extend_schema(operation_id="list_batches", summary="List the caller's batches", responses=BatchSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(user_batch_rows(user=request.user))
        filesystems = filesystems_of_page(user=request.user, rows=page)
        dependencies = dependencies_of_page(user=request.user, rows=page)
        return self.get_paginated_response(
            [batch_representation(row, filesystems[row["id"]], dependencies=dependencies[row["id"]]) for row in page]
        )

    @extend_schema(
        operation_id="submit_batch",
        summary="Submit a batch of jobs",
        description=(
            "With an `Idempotency-Key` header (1 to 255 printable characters, kept 24 hours per user), a repeated "
            "request with the same key and body creates nothing and answers 200 with the batch the first one "
            "created; the same key with another body is a 422 problem."
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _KEY_RE.pattern},
                OpenApiParameter.HEADER,
                description="Makes a retried submission safe: at most one batch per key.",
            )
        ],
        request=BatchSubmissionSerializer,
        responses={
            201: BatchSerializer,
            200: OpenApiResponse(BatchSerializer, description="A repeat of an earlier request with the same Idempotency-Key and body."),
            422: OpenApiResponse(description="The Idempotency-Key was used with another body."),
        },
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        submission = BatchSubmissionSerializer(data=request.data)
        submission.is_valid(raise_exception=True)
        data = submission.validated_data
        fields = {
            "tool_id": data["tool_id"],
            "cpu": data["hardware"]["cpu"],
            "memory": data["hardware"]["memory"],
            "filesystem_ids": data["hardware"]["filesystem_list"],
            "jobs": data["jobs"],
            "name": data["name"],
            "max_attempts": data["retry"]["attempts"] if data["retry"] else data["max_attempts"],
            "retry_rules": data["retry"]["rules"] if data["retry"] else [],
            "timeout_seconds": data["timeout_seconds"],
            "priority": data["priority"],
            "max_running": data["max_running"],
            "depends_on": data["depends_on"],
        }
        created = True
        if key is None:
            batch = submit_batch(user=request.user, **fields)
        else:
            try:
                batch, created = submit_batch_once(user=request.user, key=key, fingerprint=_fingerprint(request.data), **fields)
            except IdempotencyKeyReused as exc:
                raise Unprocessable(str(exc)) from exc
        batch = user_batches(user=request.user).get(pk=batch.pk)
        if created:
            count_submission(jobs=batch.n_jobs)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(BatchSerializer(batch).data, status=code, headers={"Location": f"/batches/{batch.pk}"})

    @extend_schema(operation_id="delete_batches", summary="Delete all of the caller's batches", description=DELETED, responses={204: None})
    def delete(self, request: Request) -> Response:
        if getattr(request._request, "trailing_slash_removed", False):
            # What `DELETE /batches/$ID` becomes when $ID is empty.
            raise ValidationError(
                {
                    "batch_id": [
                        "missing: to delete one batch, DELETE /batches/<batch_id>; to delete every one, DELETE /batches (no trailing slash)"
                    ]
                }
            )
        if request.body:
            raise ValidationError({"body": ["DELETE /batches deletes every one of your batches and takes no body"]})
        if request.query_params:
            # It deletes everything: a filter the client believes it has (?status=FAILED)
            # must not be ignored.
            name = next(iter(request.query_params))
            raise ValidationError({name: ["DELETE /batches deletes every one of your batches and takes no parameters"]})
        delete_batches(batches=Batch.objects.filter(owner=request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BatchDetailView(APIView):
    def _batch(self, request: Request, batch_id: str) -> Batch:
        batch = get_user_batch(user=request.user, batch_id=batch_id)
        if batch is None:
            raise Http404
        return batch

    @extend_schema(operation_id="get_batch_status", summary="Job counts per status", responses={200: BatchStatusSerializer, 404: NOT_FOUND})
    def get(self, request: Request, batch_id: str) -> Response:
        counts = user_batch_status_counts(user=request.user, batch_id=batch_id)
        if counts is None:
            raise Http404
        return Response(counts)

    @extend_schema(operation_id="delete_batch", summary="Delete one batch", description=DELETED, responses={204: None, 404: NOT_FOUND})
    def delete(self, request: Request, batch_id: str) -> Response:
        delete_batches(batches=Batch.objects.filter(owner=request.user, pk=self._batch(request, batch_id).pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BatchUsageView(APIView):
    @extend_schema(
        operation_id="get_batch_usage",
        summary="What the batch's ended attempts used, as seff reports it",
        description="cpu-seconds and cpu efficiency, peak and median memory and memory efficiency, elapsed times, "
        "and attempts per reason_code; every figure over the batch's ended attempts (retried ones included).",
        responses={200: BatchUsageSerializer, 404: NOT_FOUND},
    )
    def get(self, request: Request, batch_id: str) -> Response:
        batch = get_user_batch(user=request.user, batch_id=batch_id)
        if batch is None:
            raise Http404
        return Response(BatchUsageSerializer(batch_usage(batch=batch)).data)
