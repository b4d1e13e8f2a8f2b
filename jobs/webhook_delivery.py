"""Delivering webhooks: `python manage.py deliver_webhooks`, a process of its own, so a
slow or dead receiver never delays a job (workers never send anything).

Its loop (`Sender.step`), every `POLL_SECONDS`:

1. Fan out (`fan_out`): each webhook's owner's feed events after its cursor, up to the
   feed's settled point (`jobs.feed`), become Delivery rows (those of the types it
   wants), and the cursor moves on, in one transaction per webhook: an event becomes
   one delivery, once (a unique constraint besides). In order per batch: only the
   oldest pending delivery of each (webhook, batch), its head, has a `next_try`; the
   others wait with none.
2. Record the tries that ended: 2xx delivered; anything else (a status, a refused
   connection, a timeout, a redirect, which is never followed) tried again after
   10 s, 20 s, 40 s... at most an hour apart, until BATCHES_WEBHOOK_RETRY_HOURS (25)
   after the event (its `time`), then FAILED. A head that ends hands `next_try` to the
   next delivery of its (webhook, batch), due at once.
3. Start the tries due (`due_heads`): the pending deliveries whose `next_try` has come,
   longest due first, on a pool of `THREADS` threads, each try bounded by
   BATCHES_WEBHOOK_TIMEOUT_SECONDS, at most `PER_OWNER` of them a user's at once. So
   another user's backlog delays nobody: deliveries in backoff or waiting behind a
   head are never read, and receivers that never answer hold at most `PER_OWNER`
   threads. What is read is the due heads: one per batch of a webhook at most, so a
   user at `PER_OWNER` whose many batches are all due is read past each step (measured:
   49-64 ms with 200,000 of alice's batches due on PostgreSQL, against 3 ms without).
   A try is bounded per read, not in all: a receiver that dribbles a byte at a time
   holds its thread (one of its owner's `PER_OWNER`) for as long as it keeps dribbling.

At its start, and every `RESTORE_SECONDS`, it gives a next_try to each (webhook, batch)
left without a head (`restore_heads`): one whose head ended without handing it on, as
the sender of before the heads does between `migrate` and its restart.

Each try resolves the receiver's host again, checks every address (`jobs.webhooks`),
and connects to the checked address (the name is sent as Host and for TLS), so a name
that resolves elsewhere since registration reaches no private address. At least once:
a receiver may see a delivery twice (an answer lost, the sender stopped mid-try), and
`X-Batches-Delivery` lets it tell.
"""

import time
from collections import Counter
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from jobs.feed import as_feed_event, event_type, settled_id
from jobs.models import Delivery, JobEvent, Webhook
from jobs.webhooks import WebhookRefused, resolve_public, signature

POLL_SECONDS = 0.5
THREADS = 8
PER_OWNER = 2  # a user's tries in flight at once: the pool's other threads stay everyone else's
FAN_OUT_PAGE = 1000
LONGEST_BACKOFF = 3600.0
RESTORE_SECONDS = 3600.0  # between looks for batches left without a head


def fan_out(*, page: int = FAN_OUT_PAGE) -> int:
    """Step 1 of the module: returns deliveries created."""
    settled = settled_id()
    if settled is None:
        settled = JobEvent.objects.aggregate(top=Max("id"))["top"] or 0
    created = 0
    for webhook_id in list(Webhook.objects.filter(cursor__lt=settled).values_list("pk", flat=True)):
        with transaction.atomic():
            webhook = Webhook.objects.select_for_update().filter(pk=webhook_id).first()
            if webhook is None:
                continue
            rows = list(
                JobEvent.objects.filter(owner_id=webhook.owner_id, id__gt=webhook.cursor, id__lte=settled)
                .order_by("id")
                .values("id", "job_id", "batch_id", "from_status", "to_status", "reason", "attempt", "time", "counts")[:page]
            )
            wanted = [row for row in rows if event_type(row) in webhook.event_types]
            # A batch with a pending delivery already has its head: the new ones wait.
            queued = set(
                Delivery.objects.filter(
                    webhook=webhook, state=Delivery.State.PENDING, batch_id__in={row["batch_id"] for row in wanted}
                ).values_list("batch_id", flat=True)
            )
            now = timezone.now()
            new = []
            for row in wanted:
                head = row["batch_id"] not in queued
                queued.add(row["batch_id"])
                new.append(
                    Delivery(
                        webhook=webhook,
                        event_id=row["id"],
                        event_type=event_type(row),
                        batch_id=row["batch_id"],
                        payload=_as_sent(row),
                        next_try=now if head else None,
                    )
                )
            Delivery.objects.bulk_create(new, ignore_conflicts=True)
            webhook.cursor = rows[-1]["id"] if len(rows) == page else settled
            webhook.save(update_fields=["cursor"])
            created += len(wanted)
    return created


def _as_sent(row: dict[str, Any]) -> dict[str, Any]:
    """The event as GET /events shows it (ids as strings, the time as the API writes
    times), to be the delivery's body."""
    event = as_feed_event(row)
    event["time"] = _TIME.to_representation(event["time"])
    return orjson.loads(orjson.dumps(event))


_TIME = serializers.DateTimeField()


def backoff(tries: int) -> float:
    """Seconds before try `tries + 1`: 10, 20, 40... at most an hour."""
    return min(10.0 * 2 ** max(tries - 1, 0), LONGEST_BACKOFF)


def send(*, url: str, secret: str, delivery_id: int, event: str, body: bytes) -> dict[str, Any]:
    """One try (run on the pool): what happened, as a `tries` entry."""
    started = time.monotonic()
    outcome: dict[str, Any] = {"time": timezone.now().isoformat()}
    try:
        address, port = resolve_public(url)[0]
        parts = urlsplit(url)
        host = f"[{address}]" if ":" in address else address
        direct = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
        stamp = int(time.time())
        headers = {
            "Host": parts.netloc.rsplit("@", 1)[-1],
            "Content-Type": "application/json",
            "User-Agent": "batches-webhooks",
            "X-Batches-Event": event,
            "X-Batches-Delivery": str(delivery_id),
            "X-Batches-Timestamp": str(stamp),
            "X-Batches-Signature": signature(secret=secret, timestamp=stamp, body=body),
        }
        timeout = httpx.Timeout(settings.BATCHES_WEBHOOK_TIMEOUT_SECONDS)
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = client.post(direct, content=body, headers=headers, extensions={"sni_hostname": parts.hostname})
        outcome["status"] = response.status_code
    except WebhookRefused as exc:
        outcome["error"] = str(exc)
    except httpx.HTTPError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
    outcome["ms"] = round((time.monotonic() - started) * 1000)
    return outcome


def record(*, delivery_id: int, outcome: dict[str, Any], now: datetime | None = None) -> str:
    """Step 2 of the module for one try; returns the delivery's new state. Retried
    until BATCHES_WEBHOOK_RETRY_HOURS after the event (the time in its body; the
    delivery's own `created` for a body without one), however late it was made."""
    now = now or timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:
            return Delivery.State.FAILED  # its webhook was deleted meanwhile
        delivery.tries = [*delivery.tries, outcome]
        since = parse_datetime(str(delivery.payload.get("time", ""))) or delivery.created
        if 200 <= outcome.get("status", 0) < 300:
            delivery.state, delivery.delivered = Delivery.State.DELIVERED, now
        elif now - since >= timedelta(hours=settings.BATCHES_WEBHOOK_RETRY_HOURS):
            delivery.state = Delivery.State.FAILED
        else:
            delivery.next_try = now + timedelta(seconds=backoff(len(delivery.tries)))
        delivery.save(update_fields=["tries", "state", "delivered", "next_try"])
        if delivery.state != Delivery.State.PENDING:
            following = Delivery.objects.filter(
                webhook_id=delivery.webhook_id, batch_id=delivery.batch_id, state=Delivery.State.PENDING, next_try=None
            ).order_by("id")
            Delivery.objects.filter(pk__in=list(following.values_list("pk", flat=True)[:1])).update(next_try=now)
    return delivery.state


def due_heads(
    *, limit: int, in_flight: Collection[int] = (), owners_full: Collection[int] = (), now: datetime | None = None
) -> list[Delivery]:
    """Up to `limit` deliveries to try now, longest due first, with their webhooks: each
    the head of its (webhook, batch) (only heads have a `next_try`), none of `in_flight`
    (ids) and none of an owner in `owners_full`. Reads only due heads (the
    `delivery_due` index): deliveries in backoff or waiting behind a head cost nothing."""
    due = Delivery.objects.filter(state=Delivery.State.PENDING, next_try__lte=now or timezone.now())
    if in_flight:
        due = due.exclude(pk__in=in_flight)
    if owners_full:
        due = due.exclude(webhook__owner_id__in=owners_full)
    return list(due.select_related("webhook").order_by("next_try", "id")[:limit])


def restore_heads(*, now: datetime | None = None) -> int:
    """Make due each (webhook, batch)'s oldest pending delivery if it has no next_try:
    the head its group lost (see the module). Returns how many. Reads every pending
    delivery (the `delivery_batch_pending` index, in one pass), so not at every step."""
    pending = Delivery.objects.filter(state=Delivery.State.PENDING)
    oldest = pending.order_by().values("webhook_id", "batch_id").annotate(first=Min("id")).values("first")
    return pending.filter(next_try=None, id__in=oldest).update(next_try=now or timezone.now())


class Sender:
    """The loop of `deliver_webhooks` (see the module), one `step` at a time."""

    def __init__(self, *, threads: int = THREADS, per_owner: int = PER_OWNER) -> None:
        self.threads, self.per_owner = threads, per_owner
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        self.in_flight: dict[Future, tuple[int, int]] = {}  # the try -> (delivery id, owner id)
        self.next_restore = 0.0  # time.monotonic() of the next `restore_heads`: at the first step

    def step(self) -> int:
        """Fan out, record ended tries, start due ones; returns tries recorded."""
        fan_out()
        recorded = 0
        for future in [f for f in self.in_flight if f.done()]:
            delivery_id, _ = self.in_flight.pop(future)
            record(delivery_id=delivery_id, outcome=future.result())
            recorded += 1
        if time.monotonic() >= self.next_restore:
            restore_heads()
            self.next_restore = time.monotonic() + RESTORE_SECONDS
        self._start_due()
        return recorded

    def _start_due(self) -> None:
        """Step 3: fill the free threads, no owner past `per_owner`. Never more tries than
        threads (none waits in the pool's queue); each round starts at least one or
        stops, so at most `threads` queries."""
        owners = Counter(owner for _, owner in self.in_flight.values())
        while (free := self.threads - len(self.in_flight)) > 0:
            full = [owner for owner, count in owners.items() if count >= self.per_owner]
            found = due_heads(limit=free, in_flight=[pk for pk, _ in self.in_flight.values()], owners_full=full)
            if not found:
                return
            for delivery in found:
                owner = delivery.webhook.owner_id
                if owners[owner] >= self.per_owner:
                    continue  # filled by an earlier one of this round: the next round skips her
                future = self.pool.submit(
                    send,
                    url=delivery.webhook.url,
                    secret=delivery.webhook.secret,
                    delivery_id=delivery.pk,
                    event=delivery.event_type,
                    body=orjson.dumps(delivery.payload),
                )
                self.in_flight[future] = (delivery.pk, owner)
                owners[owner] += 1

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for the tries in flight and record them (at shutdown)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
            for future in [f for f in self.in_flight if f.done()]:
                delivery_id, _ = self.in_flight.pop(future)
                record(delivery_id=delivery_id, outcome=future.result())
        self.pool.shutdown(wait=False, cancel_futures=True)
