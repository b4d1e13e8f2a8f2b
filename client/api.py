"""The HTTP side of the `batches` client: where the service is, the token, and one
clear error per failed call. No Django here: the client runs wherever Python does.

The URL and token come from the command line, else the environment (BATCHES_URL,
BATCHES_TOKEN), else `~/.config/batches/config.toml` (`url = "..."`, `token = "..."`;
BATCHES_CONFIG names another file)."""

import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """A call the service refused or could not answer, as one line a person can act on
    (several for a list of choices), and the exit status the command ends with."""

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refused call


@dataclass(frozen=True)
class Settings:
    url: str
    token: str

    @classmethod
    def load(cls, *, url: str | None = None, token: str | None = None) -> "Settings":
        path = Path(os.environ.get("BATCHES_CONFIG", Path.home() / ".config" / "batches" / "config.toml"))
        stored: dict[str, Any] = {}
        if path.is_file():
            try:
                stored = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ApiError(f"{path}: {exc}") from None
        for key in ("url", "token"):
            if not isinstance(stored.get(key, ""), str):
                raise ApiError(f'{path}: {key} must be a string in quotes ({key} = "...")')
        url = url or os.environ.get("BATCHES_URL") or stored.get("url") or DEFAULT_URL
        token = token or os.environ.get("BATCHES_TOKEN") or stored.get("token") or ""
        if not token:
            raise ApiError(f'no token: set BATCHES_TOKEN, pass --token, or put token = "..." in {path}')
        if not (token.isascii() and token.isprintable()):
            raise ApiError("the token has characters no token has (tokens are printable ASCII): check BATCHES_TOKEN")
        return cls(url=url.rstrip("/"), token=token)


class Api:
    def __init__(self, settings: Settings, *, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=settings.url, headers={"Authorization": f"Bearer {settings.token}"}, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The service's answer, or ApiError. A redirect of a read to another path of
        the same origin (a trailing slash) is followed, a few at most; any other is an
        error that names it (the token goes nowhere BATCHES_URL does not say)."""
        for _ in range(5):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ApiError(f"cannot reach {self.http.base_url}: {exc}") from None
            following = response.next_request if response.is_redirect and method in ("GET", "HEAD") else None
            if following is None or _origin(following.url) != _origin(response.url):
                break
            path, kwargs = str(following.url), {}
        if response.is_redirect:
            raise ApiError(redirected(response, self.http.base_url))
        if response.status_code >= 400:
            raise ApiError(describe(response), status=response.status_code)
        return response

    def json(self, response: httpx.Response) -> Any:
        """The answer's JSON, or one line saying the URL is not the service."""
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise ApiError(f"{response.url} answered {kind}, not the service's JSON: is BATCHES_URL the batches service?") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.json(self.request("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, body: Any = None) -> Any:
        response = self.request("POST", path, json=body)
        return self.json(response) if response.content else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def pages(self, path: str, **params: Any) -> Iterator[Any]:
        """Every item of a list route, following its `Link: rel="next"` pages."""
        response = self.request("GET", path, params={"limit": 1000, **{k: v for k, v in params.items() if v is not None}})
        while True:
            yield from self.json(response)
            following = response.links.get("next", {}).get("url")
            if not following:
                return
            response = self.request("GET", following)

    def log(self, log_id: str, *, offset: int = 0) -> tuple[bytes, int]:
        response = self.request("GET", f"/logs/{log_id}", params={"offset": offset})
        return response.content, int(response.headers.get("X-Log-Size", offset + len(response.content)))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def redirected(response: httpx.Response, base_url: httpx.URL) -> str:
    """What to do about a redirect, in one line (the client follows none: the token goes
    only where BATCHES_URL says). A proxy that sends http to https is the common case:
    the address to use is the target without the route that was asked for (the part of
    the path after `base_url`'s)."""
    target = response.headers.get("Location", "")
    asked = response.request.url
    try:
        where = asked.join(target) if target else None
    except httpx.InvalidURL:
        where = None
    if where is None:
        return f"{asked} answered {response.status_code} {response.reason_phrase} (a redirect) without saying where to"
    target_path = str(where.copy_with(query=None, fragment=None))
    route = asked.path[len(base_url.path.rstrip("/")) :]
    moved = route not in ("", "/") and target_path.endswith(route)  # the same route elsewhere
    base = target_path[: -len(route)].rstrip("/") if moved else ""
    if where.scheme == "https" and asked.scheme == "http":
        # Another route on the https side (a login page, the root): the same address, in https.
        base = base or f"https://{where.netloc.decode()}{base_url.path.rstrip('/')}"
        return f"the service redirects to {target_path}: set BATCHES_URL to {base}"
    if moved:
        return f"{asked} redirects ({response.status_code}) to {where}: set BATCHES_URL to {base} if that is the service"
    return f"{asked} redirects ({response.status_code}) to {where}: is BATCHES_URL the batches service?"


def describe(response: httpx.Response) -> str:
    """`404 Not Found: no batch ...` or `400: jobs[0].args.message: required`."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.reason_phrase}"
    if not isinstance(problem, dict):
        return f"{response.status_code} {response.reason_phrase}"
    errors = problem.get("errors") or []
    if errors:
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
        return f"{response.status_code} {problem.get('title', response.reason_phrase)}: {fields}"
    detail = problem.get("detail", "")
    if response.status_code == 404 and detail in ("", "Not found."):
        detail = f"nothing at {response.request.url.path} for this token (a wrong id, or another user's)"
    return f"{response.status_code} {problem.get('title', response.reason_phrase)}: {detail}".rstrip(": ")
