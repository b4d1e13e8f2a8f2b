"""What `OPTIONS` answers on the API's routes."""

from typing import Any

from rest_framework.metadata import SimpleMetadata
from rest_framework.request import Request


class SchemaPointerMetadata(SimpleMetadata):
    """The route's name, description and formats, and where its shapes are described.
    DRF's own metadata describes a POST body with the view's serializer, which for
    `/batches` is the answer's (batch_id and n_jobs required, no tool_id or jobs): the
    OpenAPI schema is the one description of what a route takes."""

    def determine_metadata(self, request: Request, view: Any) -> dict[str, Any]:
        metadata = super().determine_metadata(request, view)
        metadata.pop("actions", None)
        metadata["schema"] = "/api/schema/"
        return metadata
