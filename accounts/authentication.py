"""DRF authentication: `Authorization: Bearer <token>` or `X-API-Key: <token>`."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.services import authenticate_token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        api_key = request.META.get("HTTP_X_API_KEY", "")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer":
                if api_key:
                    value = api_key
                else:
                    return None  # Basic, Session, ...: not ours
            value = value.strip()
        elif api_key:
            value = api_key.strip()
        else:
            return None
        if not value:
            raise exceptions.AuthenticationFailed("The token is empty.")
        token = authenticate_token(plaintext=value)
        if token is None:
            raise exceptions.AuthenticationFailed("The token is invalid, expired or revoked.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="batches"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerTokenAuthentication"
    name = ["BearerAuth", "ApiKeyAuth"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        # Either header will do: two alternatives, not one requirement naming both.
        return [{"BearerAuth": []}, {"ApiKeyAuth": []}]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, str]]:
        return [
            {"type": "http", "scheme": "bearer"},
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        ]
