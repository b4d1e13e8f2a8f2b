"""Webhooks: a user's receivers of feed events (register, list, delete), the check that
a receiver is not on a private network (SSRF), and the signature of a delivery.

A delivery is signed as GitHub and Stripe sign theirs: HMAC-SHA256, keyed with the
webhook's secret, over `<timestamp>.<body>`, where the timestamp (Unix seconds) is in
`X-Batches-Timestamp` and the hex digest in `X-Batches-Signature: v1=<hex>`. A receiver
recomputes it, compares in constant time, and refuses a timestamp far from its clock
(a replay). Sending is `jobs.webhook_delivery`'s.
"""

import hashlib
import hmac
import ipaddress
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max, QuerySet

from jobs.models import Delivery, JobEvent, Webhook
from jobs.statuses import Status

EVENT_TYPES = tuple([f"job.{status.lower()}" for status in Status.values if status != Status.SUBMITTED] + ["batch.finished"])
MAX_WEBHOOKS = 20


class WebhookRefused(ValueError):
    """A registration refused: `field` and a message a person can act on."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def resolve_public(url: str) -> list[tuple[str, int]]:
    """The (address, port) pairs `url`'s host resolves to, every one of them checked:
    a private, loopback, link-local, multicast, reserved or unspecified address raises
    WebhookRefused unless BATCHES_WEBHOOK_ALLOW_PRIVATE. Called at registration and
    again before each try (a name may resolve elsewhere later: DNS rebinding), and the
    sender connects to an address checked here, never to the name again."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("url", "must be an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("url", "has a port that is not one") from None
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused("url", f"host {parts.hostname!r} does not resolve ({exc})") from None
    addresses = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not settings.BATCHES_WEBHOOK_ALLOW_PRIVATE and not address.is_global:
            raise WebhookRefused(
                "url",
                f"{parts.hostname} resolves to {address}, a private, loopback or reserved address: refused "
                "(an operator may allow such receivers with BATCHES_WEBHOOK_ALLOW_PRIVATE=1)",
            )
        addresses.append((str(address), port))
    return addresses


def register_webhook(*, owner: AbstractBaseUser, url: str, event_types: list[str]) -> tuple[Webhook, str]:
    """A new webhook of `owner` for `event_types`, delivering the events from now on.
    Returns it and its secret (shown once). Raises WebhookRefused."""
    unknown = [kind for kind in event_types if kind not in EVENT_TYPES]
    if not event_types or unknown:
        raise WebhookRefused("event_types", f"must be a non-empty list of {', '.join(EVENT_TYPES)}; not {unknown or event_types}")
    if len(url) > 2000:
        raise WebhookRefused("url", "is longer than 2000 characters")
    resolve_public(url)
    if Webhook.objects.filter(owner=owner).count() >= MAX_WEBHOOKS:
        raise WebhookRefused("url", f"at most {MAX_WEBHOOKS} webhooks per user: delete one first")
    secret = "whsec_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        start = JobEvent.objects.aggregate(top=Max("id"))["top"] or 0
        webhook = Webhook.objects.create(owner=owner, url=url, event_types=sorted(set(event_types)), secret=secret, cursor=start)
    return webhook, secret


def user_webhooks(*, owner: AbstractBaseUser) -> QuerySet[Webhook]:
    return Webhook.objects.filter(owner=owner)


def delete_webhook(*, owner: AbstractBaseUser, webhook_id: Any) -> bool:
    """Delete `owner`'s webhook and its deliveries; False if they have no such one."""
    return Webhook.objects.filter(owner=owner, pk=webhook_id).delete()[0] > 0


def webhook_deliveries(*, webhook: Webhook) -> QuerySet[Delivery]:
    return Delivery.objects.filter(webhook=webhook)


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, the X-Batches-Signature header."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"
