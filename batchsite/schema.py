"""OpenAPI post-processing: the error answers every operation may give, documented once.

Views document their success shapes (and their own 404s); this hook adds the RFC 9457
problem responses that come from the shared machinery (authentication, throttling,
parsing, pagination, the database) so the schema lists every status a client can get.
"""

from typing import Any

from core.problems import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem: every error of the API has this shape.",
    "properties": {
        "type": {"type": "string", "description": "A URN naming the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong, for a person to read."},
        "errors": {
            "type": "array",
            "description": "Field errors (400 only); `field` is a dotted path such as `jobs[3].args.message`.",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}

_WHY = {
    400: "Invalid request: a parameter or the body is wrong (`errors` names each field).",
    401: "Missing, invalid, expired or revoked token (`WWW-Authenticate: Bearer`).",
    403: "A filesystem of the submission is not granted to the caller.",
    404: "No such resource for this user (another user's is also 404).",
    413: "The request body is too large.",
    415: "The body is not `application/json`.",
    429: "Too many requests; wait `Retry-After` seconds.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before trying again."}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`: send a token."}}
_LINK = {
    "Link": {
        "schema": {"type": "string"},
        "description": 'The next page, as `<url>; rel="next"`; absent on the last page.',
    }
}
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The new batch's URL."}}


def _problem(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY[status],
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        response["headers"] = dict(_RETRY_AFTER)
    if status == 401:
        response["headers"] = dict(_WWW_AUTHENTICATE)
    return response


_CLOSED = ("BatchSubmissionRequest", "HardwareInRequest", "JobInRequest", "DependencyInRequest", "RetryInRequest")


def add_problem_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry; see the module docstring."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for name in _CLOSED:  # the submission refuses fields it does not declare (KnownFieldsOnly)
        if name in result["components"]["schemas"]:
            result["components"]["schemas"][name]["additionalProperties"] = False
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            parameters = operation.get("parameters", [])
            statuses = {401, 429, 503}
            if any(p.get("in") == "query" for p in parameters) or "requestBody" in operation:
                statuses.add(400)
            if "{" in path:
                statuses.add(404)
            if "requestBody" in operation:
                statuses |= {413, 415}
            if operation.get("operationId") == "submit_batch":
                statuses.add(403)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                existing = responses.get(str(status))
                if existing is None:
                    responses[str(status)] = _problem(status)
                elif "content" not in existing:
                    # A view's own description (its 404) with the shared body.
                    existing["content"] = _problem(status)["content"]
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400 and "content" not in response:
                    response["content"] = _problem(400)["content"]  # a view's own error (the feed's 410)
            ok = responses.get("200")
            if ok is not None and any(p.get("name") in ("cursor", "after") for p in parameters):
                ok.setdefault("headers", {}).update(_LINK)
            if ok is not None and operation.get("operationId") == "list_events":
                ok.setdefault("headers", {})["X-Events-Through"] = {
                    "schema": {"type": "integer"},
                    "description": "Resume from this id (`after=`) to miss nothing of yours: past the page's last event "
                    "when the feed holds no more of yours yet.",
                }
            created = responses.get("201")
            if created is not None:
                created.setdefault("headers", {}).update(_LOCATION)
    return result
