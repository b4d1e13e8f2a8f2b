"""DRF authentication: `Authorization: Bearer <token>` or `X-API-Key: <token>`; and, on
the GA4GH TES routes (whose clients send it), HTTP Basic with the token as the password."""

import base64
import binascii
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, throttling
from rest_framework.request import Request

from accounts.services import authenticate_token


class FailedAuthenticationThrottle(throttling.SimpleRateThrottle):
    """Counts failed token authentications per client address (in the shared cache),
    and refuses that address once it has failed `auth_failures` times in the period:
    guessing tokens gets 429s, not answers. Successes are not counted."""

    scope = "auth_failures"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def allow_request(self, request: Request, view: Any) -> bool:
        # Like SimpleRateThrottle's, but a request does not count until it has failed.
        self.key = self.get_cache_key(request, view)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return len(self.history) < self.num_requests

    def record_failure(self) -> None:
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


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
        failures = FailedAuthenticationThrottle()
        if not failures.allow_request(request, None):
            raise exceptions.Throttled(wait=failures.wait(), detail="Too many failed authentications from this address.")
        if not value:
            failures.record_failure()
            raise exceptions.AuthenticationFailed("The token is empty.")
        token = authenticate_token(plaintext=value)
        if token is None:
            failures.record_failure()
            raise exceptions.AuthenticationFailed("The token is invalid, expired or revoked.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="batches"'


class BasicTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Basic base64(user:token)`: py-tes and other TES clients send a
    user name and password. The password is an API token; a user name, when given, must
    be the token's owner's (so a token pasted under the wrong account is refused)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        failures = FailedAuthenticationThrottle()
        if not failures.allow_request(request, None):
            raise exceptions.Throttled(wait=failures.wait(), detail="Too many failed authentications from this address.")
        try:
            username, colon, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            failures.record_failure()
            raise exceptions.AuthenticationFailed("The Basic credentials are not base64 of user:token.") from None
        token = authenticate_token(plaintext=password.strip()) if colon and password.strip() else None
        if token is None or (username and username != token.user.get_username()):
            failures.record_failure()
            raise exceptions.AuthenticationFailed("The token (the Basic password) is invalid, expired, revoked, or not this user's.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="batches"'


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


class BasicTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BasicTokenAuthentication"
    name = "BasicAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "basic", "description": "An API token as the password (GA4GH TES routes)."}
