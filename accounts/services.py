"""Issuing, checking and revoking API tokens.

Token format: `bt_<prefix>_<secret>`. The prefix (12 url-safe characters) is stored in
clear to find the row; the digest is SHA-256 of the whole token. The secret carries 256
bits of entropy, so a fast hash is enough (no offline guessing is possible).
"""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken

TOKEN_TAG = "bt"  # noqa: S105 (a fixed marker, not a secret)
# last_used_at is written at most this often, so reads do not turn into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


LONGEST_LIFETIME = timedelta(days=36525)  # 100 years: longer is a typo, or an overflow


def token_term_errors(*, name: str, expires_at: datetime | None, now: datetime | None = None) -> dict[str, str]:
    """What is wrong with a new token's name and expiry, per field (empty: nothing),
    for every way a token is issued (the admin's form, `issue_token`): a name of one
    printable line that fits its column, an expiry in the future and within 100 years."""
    now = now or timezone.now()
    errors: dict[str, str] = {}
    longest = ApiToken._meta.get_field("name").max_length
    if len(name) > longest:
        errors["name"] = f"must be at most {longest} characters"
    elif not name.isprintable():
        errors["name"] = "must be one line of printable text (no tabs or newlines)"
    if expires_at is not None and expires_at <= now:
        errors["expires_at"] = "must be in the future (or empty: never)"
    elif expires_at is not None and expires_at > now + LONGEST_LIFETIME:
        errors["expires_at"] = "must be within 100 years (or empty: never)"
    return errors


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_prefix() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


@transaction.atomic
def issue_token(*, user: AbstractBaseUser, name: str = "", expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Create a token for `user` and return (row, plaintext). The plaintext is not kept
    anywhere: callers show it once."""
    prefix = _new_prefix()
    while ApiToken.objects.filter(prefix=prefix).exists():  # 36^12 makes this rare
        prefix = _new_prefix()
    plaintext = f"{TOKEN_TAG}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, digest=_digest(plaintext), expires_at=expires_at)
    return token, plaintext


def authenticate_token(*, plaintext: str, now: datetime | None = None) -> ApiToken | None:
    """The active token matching `plaintext`, or None. Unknown prefix, wrong secret,
    expired, revoked and inactive user all give the same None, so a caller learns
    nothing about which part was wrong."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_TAG or len(parts[1]) != 12:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if token is None:
        # Spend the same work as a real comparison.
        hmac.compare_digest(_digest(plaintext), "0" * 64)
        return None
    if not hmac.compare_digest(_digest(plaintext), token.digest):
        return None
    now = now or timezone.now()
    if not token.is_active(now) or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def revoke_token(*, token: ApiToken, now: datetime | None = None) -> bool:
    """Revoke `token`; revoking twice keeps the first time. True if it was revoked now."""
    return bool(ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now()))
