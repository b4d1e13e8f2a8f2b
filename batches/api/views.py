"""Batch, tool and filesystem routes. Views parse, call one service or selector, and
shape the answer; every read is scoped to request.user."""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batches.api.serializers import (
    BatchSerializer,
    BatchStatusSerializer,
    BatchSubmissionSerializer,
    FilesystemSerializer,
    ToolSerializer,
)
from batches.models import Batch, Filesystem
from batches.selectors import get_user_batch, granted_filesystems, status_counts, user_batches, visible_tools
from batches.services import delete_batches, submit_batch
from batchsite.pagination import KeysetPagination

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
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(BatchSerializer(page, many=True).data)

    @extend_schema(
        operation_id="submit_batch",
        summary="Submit a batch of jobs",
        request=BatchSubmissionSerializer,
        responses={201: BatchSerializer},
    )
    def post(self, request: Request) -> Response:
        submission = BatchSubmissionSerializer(data=request.data)
        submission.is_valid(raise_exception=True)
        data = submission.validated_data
        batch = submit_batch(
            user=request.user,
            tool_id=data["tool_id"],
            cpu=data["hardware"]["cpu"],
            memory=data["hardware"]["memory"],
            filesystem_ids=data["hardware"]["filesystem_list"],
            jobs=data["jobs"],
            name=data["name"],
            max_attempts=data["max_attempts"],
            timeout_seconds=data["timeout_seconds"],
        )
        batch = user_batches(user=request.user).get(pk=batch.pk)
        return Response(BatchSerializer(batch).data, status=status.HTTP_201_CREATED, headers={"Location": f"/batches/{batch.pk}"})

    @extend_schema(operation_id="delete_batches", summary="Cancel and delete all of the caller's batches", responses={204: None})
    def delete(self, request: Request) -> Response:
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
        return Response(status_counts(batch=self._batch(request, batch_id)))

    @extend_schema(operation_id="delete_batch", summary="Cancel and delete one batch", responses={204: None, 404: NOT_FOUND})
    def delete(self, request: Request, batch_id: str) -> Response:
        delete_batches(batches=Batch.objects.filter(owner=request.user, pk=self._batch(request, batch_id).pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ToolListView(generics.ListAPIView):
    serializer_class = ToolSerializer
    pagination_class = KeysetPagination
    cursor_field = "name"

    def get_queryset(self):
        return visible_tools()

    @extend_schema(operation_id="list_tools", summary="Tools the caller can run")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class ToolDetailView(generics.RetrieveAPIView):
    serializer_class = ToolSerializer
    lookup_url_kwarg = "tool_id"

    def get_queryset(self):
        return visible_tools()

    @extend_schema(operation_id="get_tool", summary="One tool and its parameters")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class FilesystemListView(generics.ListAPIView):
    serializer_class = FilesystemSerializer
    pagination_class = KeysetPagination
    cursor_field = "name"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Filesystem.objects.none()
        return granted_filesystems(user=self.request.user)

    @extend_schema(operation_id="list_filesystems", summary="Filesystems the caller may mount")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)
