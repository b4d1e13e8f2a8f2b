"""Webhooks: registration (the secret once, private receivers refused), who sees what,
and deliveries to a real HTTP receiver: signed, in order per batch, retried after
errors until delivered, a receiver that never answers delaying no one else's."""

import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.test.utils import override_settings

from jobs.batch_finished import record_finished_batches
from jobs.models import Delivery, Job, JobEvent
from jobs.statuses import Status
from jobs.webhook_delivery import Sender, backoff, fan_out, record
from tests.test_api_contract import finish, submit


def verify(secret: str, headers, body: bytes) -> bool:
    """The README's five lines a receiver runs."""
    timestamp, signature = headers["X-Batches-Timestamp"], headers["X-Batches-Signature"]
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) < 300


class Receiver:
    """An HTTP receiver on 127.0.0.1: answers each POST with the next of `answers`
    (then 200), recording what it got."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers, self.got = list(answers or []), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = outer.answers.pop(0) if outer.answers else 200
                outer.got.append((dict(self.headers), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def register(client, url: str, types: list[str], status: int = 201) -> dict:
    response = client.post("/webhooks", {"url": url, "event_types": types}, format="json")
    assert response.status_code == status, response.content
    return response.json()


def run_sender(until, *, sender: Sender | None = None, seconds: float = 20) -> Sender:
    """Step the sender (as deliver_webhooks does) until `until()`, making every retry due
    at once (time passing, without the wait)."""
    sender = sender or Sender()
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "the deliveries did not arrive"
        sender.step()
        Delivery.objects.filter(state=Delivery.State.PENDING, next_try__isnull=False).update(
            next_try=Delivery._meta.get_field("created").default()
        )
        time.sleep(0.05)
    return sender


def test_a_receiver_on_loopback_or_a_private_address_is_refused(alice_client, db):
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]/x"):
        response = alice_client.post("/webhooks", {"url": url, "event_types": ["job.failed"]}, format="json")
        assert response.status_code == 400, (url, response.content)
        assert "BATCHES_WEBHOOK_ALLOW_PRIVATE" in response.json()["errors"][0]["message"]
    for body in ({"url": "ftp://example.org/", "event_types": ["job.failed"]}, {"url": "http://127.0.0.1/", "event_types": ["job.nope"]}):
        assert alice_client.post("/webhooks", body, format="json").status_code == 400
    with override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True):
        assert register(alice_client, "http://127.0.0.1:9/x", ["job.failed"])["url"] == "http://127.0.0.1:9/x"


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True)
def test_the_secret_is_shown_once_and_bob_sees_none_of_alices(alice_client, bob_client, db):
    created = register(alice_client, "http://127.0.0.1:9/x", ["batch.finished", "job.failed"])
    assert set(created) == {"id", "url", "event_types", "created", "secret"} and created["secret"].startswith("whsec_")
    listed = alice_client.get("/webhooks").json()
    assert listed == [{k: created[k] for k in ("id", "url", "event_types", "created")}]
    assert bob_client.get("/webhooks").json() == []
    assert bob_client.get(f"/webhooks/{created['id']}/deliveries").status_code == 404
    assert bob_client.delete(f"/webhooks/{created['id']}").status_code == 404
    assert alice_client.get(f"/webhooks/{created['id']}/deliveries").json() == []
    assert alice_client.delete(f"/webhooks/{created['id']}").status_code == 204
    assert alice_client.get("/webhooks").json() == []


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True)
def test_signed_deliveries_in_order_per_batch_retried_until_delivered(alice_client, bob_client, catalog):
    receiver = Receiver(answers=[500, 500, 503])  # errors first, as a receiver being deployed
    try:
        hook = register(alice_client, receiver.url, ["batch.finished", "job.failed"])
        bobs = register(bob_client, receiver.url, ["batch.finished", "job.failed"])
        batches = [submit(alice_client, catalog) for _ in range(2)]
        for batch in batches:
            first, second = Job.objects.filter(batch_id=batch["batch_id"]).order_by("index").values_list("pk", flat=True)
            finish(first, Status.FAILED, reason="exit code 3")
            finish(second)
        record_finished_batches()
        run_sender(lambda: Delivery.objects.filter(state=Delivery.State.DELIVERED).count() == 4)
    finally:
        receiver.close()
    ok = [(headers, body) for headers, body, code in receiver.got if code == 200]
    assert all(verify(hook["secret"], headers, body) for headers, body in ok)
    assert not any(verify(bobs["secret"], headers, body) for headers, body in ok)
    events = [json.loads(body) for _, body in ok]
    feed = {e["id"]: e for e in alice_client.get("/events?limit=1000").json()}
    assert all(event == feed[event["id"]] for event in events)  # the body is the feed's event
    for batch in batches:
        mine = [e["type"] for e in events if e["batch_id"] == batch["batch_id"]]
        assert mine == ["job.failed", "batch.finished"]  # in order, each once
    assert {headers["X-Batches-Event"] for headers, _ in ok} == {"job.failed", "batch.finished"}
    deliveries = alice_client.get(f"/webhooks/{hook['id']}/deliveries").json()
    assert [d["state"] for d in deliveries] == ["DELIVERED"] * 4
    assert sum(len(d["tries"]) for d in deliveries) == 7  # three errors, then each once
    assert {t["status"] for d in deliveries for t in d["tries"]} == {500, 503, 200}


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True, BATCHES_WEBHOOK_TIMEOUT_SECONDS=2)
def test_a_receiver_that_never_answers_delays_no_one_else(alice_client, bob_client, catalog):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    receiver = Receiver()
    try:
        register(alice_client, f"http://127.0.0.1:{silent.getsockname()[1]}/", ["job.failed"])
        register(bob_client, receiver.url, ["job.failed"])
        for client in (alice_client, bob_client):
            batch = submit(client, catalog)
            assert client.post(f"/batches/{batch['batch_id']}/cancel").status_code == 200
        started = time.monotonic()
        sender = run_sender(lambda: len(receiver.got) == 2)
        assert time.monotonic() - started < 1.5  # bob's arrived while alice's hung
        run_sender(lambda: Delivery.objects.filter(webhook__owner__username="alice").exclude(tries=[]).exists(), sender=sender)
    finally:
        receiver.close()
        silent.close()
    stuck = Delivery.objects.filter(webhook__owner__username="alice").exclude(tries=[]).first()
    assert stuck.state == Delivery.State.PENDING and "Timeout" in stuck.tries[0]["error"]


def test_retries_back_off_for_a_day_then_fail(alice_client, catalog):
    with override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True):
        hook = register(alice_client, "http://127.0.0.1:9/", ["job.failed"])
    batch = submit(alice_client, catalog)
    alice_client.post(f"/batches/{batch['batch_id']}/cancel")
    assert fan_out() == 2
    delivery, following = Delivery.objects.filter(webhook_id=hook["id"]).order_by("id")
    assert following.next_try is None  # it waits behind the batch's first
    assert [backoff(n) for n in (1, 2, 3, 10, 20)] == [10, 20, 40, 3600, 3600]
    assert record(delivery_id=delivery.pk, outcome={"error": "refused", "ms": 1}) == Delivery.State.PENDING
    later = delivery.created + timedelta(hours=24)
    assert record(delivery_id=delivery.pk, outcome={"status": 500, "ms": 1}, now=later) == Delivery.State.PENDING
    assert record(delivery_id=delivery.pk, outcome={"status": 500, "ms": 1}, now=later + timedelta(hours=1)) == Delivery.State.FAILED
    following.refresh_from_db()
    assert following.next_try == later + timedelta(hours=1)  # the batch's next is due at once


def test_the_retry_window_counts_from_the_event(alice_client, catalog):
    """As the README says: a delivery made late (the sender was stopped for hours) has
    the rest of the event's window, not a new one."""
    with override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True):
        hook = register(alice_client, "http://127.0.0.1:9/", ["job.failed"])
    batch = submit(alice_client, catalog)
    alice_client.post(f"/batches/{batch['batch_id']}/cancel")
    fan_out()
    event = JobEvent.objects.filter(batch_id=batch["batch_id"], to_status=Status.FAILED).order_by("id").first()
    delivery = Delivery.objects.get(webhook_id=hook["id"], event_id=event.pk)
    Delivery.objects.filter(pk=delivery.pk).update(created=event.time + timedelta(hours=3))
    assert record(delivery_id=delivery.pk, outcome={"status": 500, "ms": 1}, now=event.time + timedelta(hours=24)) == Delivery.State.PENDING
    assert record(delivery_id=delivery.pk, outcome={"status": 500, "ms": 1}, now=event.time + timedelta(hours=25)) == Delivery.State.FAILED


@pytest.mark.parametrize("page", ["/admin/jobs/delivery/", "/admin/jobs/webhook/"])
def test_the_admin_shows_deliveries(admin_client, alice_client, catalog, page):
    with override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True):
        register(alice_client, "http://127.0.0.1:9/", ["job.failed"])
    batch = submit(alice_client, catalog)
    alice_client.post(f"/batches/{batch['batch_id']}/cancel")
    fan_out()
    response = admin_client.get(page)
    assert response.status_code == 200
    delivery = Delivery.objects.first()
    assert admin_client.get(f"/admin/jobs/delivery/{delivery.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/jobs/delivery/{delivery.pk}/delete/").status_code == 403


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True)
def test_the_deliver_webhooks_command_sends(alice_client, catalog):
    from django.core.management import call_command

    receiver = Receiver()
    try:
        register(alice_client, receiver.url, ["job.failed"])
        batch = submit(alice_client, catalog)
        alice_client.post(f"/batches/{batch['batch_id']}/cancel")
        call_command("deliver_webhooks", "--once")
        call_command("deliver_webhooks", "--once")
    finally:
        receiver.close()
    assert [json.loads(body)["type"] for _, body, _ in receiver.got] == ["job.failed", "job.failed"]
    assert set(Delivery.objects.values_list("state", flat=True)) == {Delivery.State.DELIVERED}


def test_lists_are_constant_in_queries(alice, alice_client, db):
    from jobs.models import Webhook
    from tests.test_api_queries import assert_constant

    hooks = Webhook.objects.bulk_create(
        Webhook(owner=alice, url=f"https://example.org/{n}", event_types=["job.failed"], secret="s") for n in range(101)
    )
    Delivery.objects.bulk_create(
        Delivery(webhook=hooks[0], event_id=n, event_type="job.failed", batch_id=hooks[0].pk, payload={}, tries=[]) for n in range(101)
    )
    # 1 the token with its user, 2 the page.
    assert_constant(alice_client, "/webhooks", 2)
    # 1 the token, 2 the webhook (the owner's), 3 the page.
    assert_constant(alice_client, f"/webhooks/{hooks[0].pk}/deliveries", 3)
