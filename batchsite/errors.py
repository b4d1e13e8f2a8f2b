"""Django's own error views (raised outside DRF: unknown URL, CSRF, crashes) as JSON."""

from django.http import HttpRequest, JsonResponse

from core.problems import problem_response


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(404, f"No route or resource at {request.path}.")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(400, "The request could not be understood.")


def forbidden(request: HttpRequest, exception: Exception | None = None, reason: str = "") -> JsonResponse:
    return problem_response(403, reason or "You may not do this.")


def server_error(request: HttpRequest) -> JsonResponse:
    return problem_response(500, "The server failed to answer; the error has been logged.")
