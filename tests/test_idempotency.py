"""`Idempotency-Key` on POST /batches: a client that retries after a lost answer (a 503
after the commit, a dropped connection) gets the batch it already created, never a
second one."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from batches.models import Batch, IdempotencyKey
from tests.conftest import make_client, submission

pytestmark = pytest.mark.django_db


def post(client, body, key):
    return client.post("/batches", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_give_back_the_same_batch(alice_client, catalog):
    body = submission(catalog)
    first = post(alice_client, body, "retry-me-1")
    assert first.status_code == 201
    again = post(alice_client, dict(reversed(list(body.items()))), "retry-me-1")  # key order does not matter
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert Batch.objects.count() == 1


def test_the_same_key_with_another_body_is_422(alice_client, catalog):
    assert post(alice_client, submission(catalog), "k").status_code == 201
    other = post(alice_client, submission(catalog, jobs=[{"args": {"message": "different"}}]), "k")
    assert other.status_code == 422
    assert other["Content-Type"] == "application/problem+json"
    assert "another request body" in other.json()["detail"]
    assert Batch.objects.count() == 1


def test_keys_belong_to_one_user(alice_client, bob_client, catalog):
    body = submission(catalog)
    assert post(alice_client, body, "shared").status_code == 201
    assert post(bob_client, body, "shared").status_code == 201
    assert Batch.objects.count() == 2


@pytest.mark.parametrize("key", ["", " leading-space", "x" * 256, "tab\there", "ünï"])
def test_a_malformed_key_is_400(alice_client, catalog, key):
    response = post(alice_client, submission(catalog), key)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert Batch.objects.count() == 0


def test_a_key_is_forgotten_after_a_day(alice_client, catalog):
    body = submission(catalog)
    assert post(alice_client, body, "old").status_code == 201
    IdempotencyKey.objects.update(created=timezone.now() - timedelta(hours=25))
    assert post(alice_client, body, "old").status_code == 201
    assert Batch.objects.count() == 2
    IdempotencyKey.objects.update(created=timezone.now() - timedelta(hours=25))
    call_command("cleanup", "--older-than", "30d")
    assert not IdempotencyKey.objects.exists()


def test_without_a_key_every_post_is_a_new_batch(alice_client, catalog):
    body = submission(catalog)
    assert alice_client.post("/batches", body, format="json").status_code == 201
    assert alice_client.post("/batches", body, format="json").status_code == 201
    assert Batch.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers: PostgreSQL")
def test_concurrent_requests_with_one_key_make_one_batch(alice, catalog):
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(2000)])
    results: list[tuple[int, str]] = []
    start = threading.Barrier(4)

    def send() -> None:
        client = make_client(alice)
        start.wait()
        response = post(client, body, "race")
        results.append((response.status_code, response.json().get("batch_id", "")))
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(code for code, _ in results) == [200, 200, 200, 201], results
    assert len({batch_id for _, batch_id in results}) == 1
    assert Batch.objects.count() == 1
