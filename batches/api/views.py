"""Tool and filesystem routes: what the catalog offers the caller."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from batches.api.serializers import (
    FilesystemSerializer,
    ToolSerializer,
)
from batches.models import Filesystem
from batches.selectors import (
    granted_filesystems,
    visible_tools,
)
from core.pagination import KeysetPagination


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
