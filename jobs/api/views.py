"""Job, event, log, cancel and retry routes. Every lookup goes through a batch owned by
request.user, so another user's ids answer 404."""

import django_filters
from django import forms
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batches.api.serializers import ToolRefSerializer
from batches.models import Batch
from batches.selectors import batch_filesystem_ids, get_user_batch
from core.pagination import KeysetPagination
from core.problems import Conflict
from jobs.api.serializers import AttemptSerializer, JobDetailSerializer, JobEventSerializer, JobSerializer
from jobs.executors import read_log
from jobs.models import Job
from jobs.selectors import batch_jobs, get_user_job, get_user_job_by_id, get_user_job_by_log, job_attempts, job_events, last_ended_attempt
from jobs.services import CancelResult, CancelStillStopping, cancel_batch, cancel_jobs, retry_failed_jobs
from jobs.statuses import Status
from jobs.waiting import describe

NOT_FOUND = OpenApiResponse(description="No such batch or job for this user (another user's is also 404).")
CHANGED = inline_serializer("ChangedJobs", {"changed": serializers.IntegerField(help_text="Jobs whose state changed.")})
CANCELLED = inline_serializer(
    "CancelledJobs",
    {
        "changed": serializers.IntegerField(help_text="Jobs cancelled: FAILED (Cancelled by user) now, or once their attempt has stopped."),
        "stopping": serializers.IntegerField(
            help_text="Of those, jobs whose running attempt is being stopped: FAILED (Cancelled by user) once it has."
        ),
    },
)
CONFLICT = OpenApiResponse(description="Some jobs of the batch are still stopping after a cancel; retry once they are FAILED.")


def _cancelled(result: CancelResult) -> Response:
    return Response({"changed": result.changed, "stopping": result.stopping})


def _offset(raw: str) -> int:
    # Plain ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not raw.isascii() or not raw.isdigit():
        raise ValidationError({"offset": [f"must be a whole number of bytes, not {raw!r}"]})
    digits = raw.lstrip("0") or "0"
    # Python refuses int() of 4,300+ digits; any offset that long is past the log's end.
    return int(digits) if len(digits) <= 30 else 2**63


def _user_batch(request: Request, batch_id: str) -> Batch:
    batch = get_user_batch(user=request.user, batch_id=batch_id)
    if batch is None:
        raise Http404
    return batch


def _user_job(request: Request, batch_id: str, job_id: str) -> Job:
    job = get_user_job(user=request.user, batch_id=batch_id, job_id=job_id)
    if job is None:
        raise Http404
    return job


def _job_detail(job: Job) -> Response:
    context = {
        "filesystem_ids": batch_filesystem_ids(batch_id=job.batch_id),
        "waiting": describe(job),
        "last_attempt": last_ended_attempt(job=job),
    }
    return Response(JobDetailSerializer(job, context=context).data)


class JobFilterForm(forms.Form):
    def clean_status(self) -> str:
        # django-filter reads `?status=` as "no filter"; a client that sends it has a bug.
        if self.data.get("status") == "":
            raise forms.ValidationError(f"must be one of {', '.join(Status.values)}")
        return self.cleaned_data["status"]


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Status.choices, help_text="Only jobs in this state.")

    class Meta:
        model = Job
        fields = ["status"]
        form = JobFilterForm


class JobListView(generics.ListAPIView):
    serializer_class = JobSerializer
    pagination_class = KeysetPagination
    filterset_class = JobFilter
    cursor_field = "index"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        self.batch = _user_batch(self.request, self.kwargs["batch_id"])
        return batch_jobs(batch_id=self.batch.pk)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if hasattr(self, "batch"):
            context["job_tool"] = ToolRefSerializer(self.batch.tool).data
            context["batch"] = self.batch
        return context

    @extend_schema(
        operation_id="list_jobs", summary="Jobs of a batch, in submission order", responses={200: JobSerializer(many=True), 404: NOT_FOUND}
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class JobDetailView(APIView):
    @extend_schema(operation_id="get_job", summary="One job's attributes", responses={200: JobDetailSerializer, 404: NOT_FOUND})
    def get(self, request: Request, batch_id: str, job_id: str) -> Response:
        return _job_detail(_user_job(request, batch_id, job_id))


class JobByIdView(APIView):
    @extend_schema(
        operation_id="get_job_by_id",
        summary="One job's attributes, by the job's id alone",
        description=(
            "The same answer as GET /batches/{batch_id}/jobs/{job_id}, for a client that holds only the job's id "
            "(an addition to the seed's routes; `batch_id` in the answer names its batch)."
        ),
        responses={200: JobDetailSerializer, 404: NOT_FOUND},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = get_user_job_by_id(user=request.user, job_id=job_id)
        if job is None:
            raise Http404
        return _job_detail(job)


class JobEventListView(generics.ListAPIView):
    serializer_class = JobEventSerializer
    pagination_class = KeysetPagination
    cursor_field = "id"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        return job_events(job=_user_job(self.request, self.kwargs["batch_id"], self.kwargs["job_id"]))

    @extend_schema(
        operation_id="list_job_events",
        summary="The job's state changes, oldest first",
        responses={200: JobEventSerializer(many=True), 404: NOT_FOUND},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class JobAttemptListView(generics.ListAPIView):
    serializer_class = AttemptSerializer
    pagination_class = KeysetPagination
    cursor_field = "number"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        return job_attempts(job=_user_job(self.request, self.kwargs["batch_id"], self.kwargs["job_id"]))

    @extend_schema(
        operation_id="list_job_attempts",
        summary="The job's attempts, first to last: how each ended and what it used",
        responses={200: AttemptSerializer(many=True), 404: NOT_FOUND},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class BatchCancelView(APIView):
    @extend_schema(
        operation_id="cancel_batch",
        summary="Cancel every unfinished job of the batch",
        description=(
            "Answers at once whatever the batch's size: its jobs are no longer started, queued jobs become FAILED "
            "(Cancelled by user) within moments, running ones once their attempt has stopped. A retry is refused "
            "(409) until the cancel is complete."
        ),
        request=None,
        responses={200: CANCELLED, 404: NOT_FOUND},
    )
    def post(self, request: Request, batch_id: str) -> Response:
        batch = _user_batch(request, batch_id)
        return _cancelled(cancel_batch(batch=batch, by=request.user))


class BatchRetryView(APIView):
    @extend_schema(
        operation_id="retry_batch",
        summary="Run the batch's FAILED jobs again",
        request=None,
        responses={200: CHANGED, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: Request, batch_id: str) -> Response:
        batch = _user_batch(request, batch_id)
        try:
            return Response({"changed": retry_failed_jobs(jobs=Job.objects.filter(batch=batch))})
        except CancelStillStopping as exc:
            raise Conflict(str(exc)) from exc


class JobCancelView(APIView):
    @extend_schema(
        operation_id="cancel_job",
        summary="Cancel one job if it is unfinished",
        description="A queued job is FAILED (Cancelled by user) at once; a running one once its attempt has stopped.",
        request=None,
        responses={200: CANCELLED, 404: NOT_FOUND},
    )
    def post(self, request: Request, batch_id: str, job_id: str) -> Response:
        job = _user_job(request, batch_id, job_id)
        return _cancelled(cancel_jobs(jobs=Job.objects.filter(pk=job.pk), by=request.user))


class LogView(APIView):
    @extend_schema(
        operation_id="get_log",
        summary="The job's stdout and stderr",
        parameters=[
            OpenApiParameter("offset", {"type": "integer", "minimum": 0}, description="Byte offset to read from (to tail a running job).")
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="Log bytes from `offset`; `X-Log-Size` gives the size now."),
            404: NOT_FOUND,
        },
    )
    def get(self, request: Request, log_id: str) -> HttpResponse:
        offset = _offset(request.query_params.get("offset", "0"))
        job = get_user_job_by_log(user=request.user, log_id=log_id)
        if job is None:
            raise Http404
        data, size = read_log(log_id=job.log_id, offset=offset)
        response = HttpResponse(data, content_type="text/plain; charset=utf-8", status=status.HTTP_200_OK)
        response["X-Log-Size"] = str(size)
        return response
