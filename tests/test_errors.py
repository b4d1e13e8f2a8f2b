"""Every error is an RFC 9457 problem in JSON: unknown URLs (also with DEBUG on), wrong
methods, throttling, and a database that is down. Never an HTML page or a traceback."""

import pytest
from django.core.cache import cache
from django.db import DataError, IntegrityError, OperationalError, ProgrammingError, connection
from django.test import override_settings
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from accounts.authentication import FailedAuthenticationThrottle
from accounts.services import issue_token
from batches.models import Batch
from tests.conftest import submission


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= set(body)
    text = response.content.decode()
    assert "<html" not in text.lower() and "Traceback" not in text
    return body


UNKNOWN = ["/nope", "/batches/not-a-uuid", "/batches/00000000-0000-0000-0000-000000000000/nope", "/api/nope", "/static/nope.js", "/"]


@pytest.mark.parametrize("url", UNKNOWN)
def test_unknown_url_is_a_json_404(alice_client, url):
    assert_problem(alice_client.get(url), 404)


@pytest.mark.parametrize("url", UNKNOWN)
def test_unknown_url_is_a_json_404_even_with_debug(alice_client, url):
    with override_settings(DEBUG=True):
        assert_problem(alice_client.get(url), 404)


def test_unknown_url_for_anonymous(anon_client):
    assert_problem(anon_client.delete("/nothing/here"), 404)


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("put", "/batches", {"GET", "POST", "DELETE"}),
        ("patch", "/batches/{batch}", {"GET", "DELETE"}),
        ("get", "/batches/{batch}/cancel", {"POST"}),
        ("delete", "/batches/{batch}/jobs", {"GET"}),
        ("post", "/tools", {"GET"}),
    ],
)
def test_wrong_method_is_a_json_405(alice_client, catalog, method, url, allowed):
    batch = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    response = getattr(alice_client, method)(url.format(batch=batch))
    assert_problem(response, 405)
    assert allowed <= {m.strip() for m in response["Allow"].split(",")}


def test_wrong_method_outside_drf_is_json(anon_client):
    response = anon_client.post("/healthz")
    assert_problem(response, 405)
    assert response["Allow"] == "GET"


@pytest.fixture
def throttle_of_three(monkeypatch):
    # DRF copies the rates onto the throttle class when it is imported, so the override
    # goes there; the cache holds the request history.
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/min"})
    cache.clear()
    yield
    cache.clear()


def test_throttled_is_429_with_retry_after(alice_client, bob_client, throttle_of_three):
    for _ in range(3):
        assert alice_client.get("/batches").status_code == 200
    response = alice_client.get("/batches")
    body = assert_problem(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "throttled" in body["type"]
    assert bob_client.get("/batches").status_code == 200  # per user


class DeadDatabase:
    """Stands in for a dead database server: every query matching `table` (all of them
    when None) fails the way the driver fails when the server is gone."""

    def __init__(self, table: str | None = None) -> None:
        self.table = table
        self.calls = 0

    def __call__(self, execute, sql, params, many, context):
        if self.table is None or self.table in sql:
            self.calls += 1
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)


def assert_503(response) -> None:
    body = assert_problem(response, 503)
    assert int(response["Retry-After"]) >= 1
    assert "unavailable" in body["detail"]
    assert "server closed" not in body["detail"]  # no driver internals


def test_database_down_during_authentication_is_503(alice_client):
    """The token lookup is the first query of an API request."""
    dead = DeadDatabase()
    with connection.execute_wrapper(dead):
        assert_503(alice_client.get("/batches"))
    assert dead.calls >= 1


@pytest.mark.parametrize(
    ("method", "url"),
    [("get", "/batches"), ("get", "/batches/{batch}"), ("delete", "/batches"), ("post", "/batches"), ("get", "/batches/{batch}/jobs")],
)
def test_database_down_inside_a_view_is_503(alice_client, catalog, method, url):
    """Authentication works; the view's own query on batches fails."""
    batch = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    kwargs = {"data": submission(catalog), "format": "json"} if method == "post" else {}
    dead = DeadDatabase("batches_batch")
    with connection.execute_wrapper(dead):
        assert_503(getattr(alice_client, method)(url.format(batch=batch), **kwargs))
    assert dead.calls >= 1
    assert Batch.objects.count() == 1


@pytest.mark.parametrize("url", ["/batches", "/admin/"])
def test_database_down_with_a_session_is_503_json(root, client, url):
    """Session authentication: through DRF for the API, through Django's own stack
    (caught by ProblemMiddleware) for the admin, which otherwise answers in HTML."""
    client.force_login(root)
    with connection.execute_wrapper(DeadDatabase()):
        response = client.get(url)
    assert_503(response)


@pytest.mark.parametrize("error", [DataError, IntegrityError, ProgrammingError])
def test_other_database_errors_are_500_not_503(db, alice, error):
    """A bug (bad data reaching the database, a broken query) is not an outage: 500, as
    JSON, with no driver message; clients must not be told to retry it."""
    client = APIClient(raise_request_exception=False)
    _, plaintext = issue_token(user=alice)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")

    def broken(execute, sql, params, many, context):
        if "batches_batch" in sql:
            raise error("something the code got wrong")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(broken):
        response = client.get("/batches")
    body = assert_problem(response, 500)
    assert "Retry-After" not in response
    assert "got wrong" not in body["detail"]


def test_readiness_reports_the_database(db, anon_client):
    assert anon_client.get("/readyz").json() == {
        "status": "ok",
        "checks": {"database": "ok", "executor": "ok"},
        "workers": 0,
        "isolation": {},
    }
    with connection.execute_wrapper(DeadDatabase()):
        response = anon_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unavailable")
    assert anon_client.get("/healthz").json() == {"status": "ok"}


def test_readiness_reports_an_unusable_executor(db, anon_client, settings, tmp_path):
    """The slurm executor with no Slurm commands where it looks for them (a real
    controller going away is tests/test_slurm.py's)."""
    from jobs.executors.slurm import SlurmExecutor

    settings.BATCHES_EXECUTOR = "slurm"
    settings.BATCHES_SLURM_BIN = str(tmp_path / "nowhere")
    SlurmExecutor._ready = (float("-inf"), None)
    response = anon_client.get("/readyz")
    SlurmExecutor._ready = (float("-inf"), None)
    assert response.status_code == 503
    assert response.json()["checks"]["executor"] == (
        "unavailable: Slurm controller: sinfo not found (are the Slurm client commands installed?)"
    )
    settings.BATCHES_EXECUTOR = "tests.nowhere.Executor"
    response = anon_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["executor"].startswith("unavailable: BATCHES_EXECUTOR 'tests.nowhere.Executor': cannot import")


@pytest.fixture
def five_failures(monkeypatch):
    monkeypatch.setattr(FailedAuthenticationThrottle, "THROTTLE_RATES", {"auth_failures": "5/min"})
    cache.clear()
    yield
    cache.clear()


def test_failed_authentications_are_throttled_per_address(anon_client, alice_client, five_failures):
    """2,000 bad tokens used to get 2,000 401s: guessing was free."""
    for _ in range(5):
        assert anon_client.get("/batches", HTTP_AUTHORIZATION="Bearer bt_nope_guess").status_code == 401
    response = anon_client.get("/batches", HTTP_AUTHORIZATION="Bearer bt_nope_guess")
    assert_problem(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 60
    # From that address even a good token waits; from another address nothing changed.
    assert anon_client.get("/batches", HTTP_AUTHORIZATION=f"Bearer {alice_client.token}").status_code == 429
    assert anon_client.get("/batches", HTTP_AUTHORIZATION="Bearer bt_nope_x", REMOTE_ADDR="10.9.9.9").status_code == 401
    # Successes are not counted.
    cache.clear()
    for _ in range(10):
        assert alice_client.get("/batches").status_code == 200


def test_admin_logins_that_keep_failing_are_locked_out(root, settings):
    from django.test import Client

    root.set_password("right")
    root.save()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    assert client.post("/admin/login/?next=/admin/", {"username": "root", "password": "wrong"}).status_code == 429
    locked = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "right"})
    assert locked.status_code in (403, 429), locked.status_code
    assert not client.get("/admin/").wsgi_request.user.is_authenticated


def test_a_forged_x_forwarded_for_does_not_escape_the_failure_throttle(anon_client, five_failures):
    """DRF trusts X-Forwarded-For unless told how many proxies there are: a client
    rotating the header was a new address each time, and guessed tokens freely."""
    codes = [
        anon_client.get("/batches", HTTP_AUTHORIZATION="Bearer bt_nope_guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(8)
    ]
    assert codes == [401] * 5 + [429] * 3, codes


def test_a_forged_x_forwarded_for_does_not_escape_the_admin_lockout(root, settings):
    from django.test import Client

    root.set_password("right")
    root.save()
    client = Client()
    codes = [
        client.post(
            "/admin/login/?next=/admin/", {"username": "root", "password": "wrong"}, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}"
        ).status_code
        for i in range(settings.AXES_FAILURE_LIMIT + 2)
    ]
    assert codes[settings.AXES_FAILURE_LIMIT - 1 :] == [429] * 3, codes


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(anon_client, five_failures, settings):
    """With BATCHES_TRUSTED_PROXIES=1 the address the proxy appended is the client's:
    two clients behind the same proxy are throttled apart; what a client put in front
    of the proxy's entry changes nothing."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    def attempt(client_address: str, forged: str = "") -> int:
        chain = f"{forged}, {client_address}" if forged else client_address
        return anon_client.get("/batches", HTTP_AUTHORIZATION="Bearer bt_nope_guess", HTTP_X_FORWARDED_FOR=chain).status_code

    assert [attempt("203.0.113.7", forged=f"10.0.0.{i}") for i in range(6)] == [401] * 5 + [429]
    assert attempt("203.0.113.8") == 401


def test_migrate_makes_the_throttles_cache_table(db):
    """An upgrade that runs only `migrate` has the table the database cache counts
    throttles in (it was made by `createcachetable` alone)."""
    assert "batches_cache" in connection.introspection.table_names()


MISSING_CACHE = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "batches_cache_never_made"}}


@override_settings(CACHES=MISSING_CACHE)
def test_a_missing_table_is_named_not_called_an_outage(db, alice):
    """The throttles' table missing (real, not simulated: the cache points at a table no
    migration made) is a 500 naming the table and the command, with no Retry-After: no
    retry mends it, and "the database is unavailable" sent operators looking for an
    outage."""
    client = APIClient(raise_request_exception=False)
    _, plaintext = issue_token(user=alice)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    response = client.get("/batches")
    body = assert_problem(response, 500)
    assert "Retry-After" not in response
    assert "batches_cache_never_made" in body["detail"]
    assert "python manage.py migrate" in body["detail"]


def test_a_missing_table_outside_drf_is_named(root, client):
    """The admin, through Django's own stack (ProblemMiddleware): the same answer."""
    client.force_login(root)

    def missing(execute, sql, params, many, context):
        if "django_session" in sql:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM batches_no_such_table")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(missing):
        response = client.get("/admin/")
    body = assert_problem(response, 500)
    assert "batches_no_such_table" in body["detail"]
