"""API tokens: both headers, hashed at rest, expiry, revocation, and issue_token."""

import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import authenticate_token, issue_token, revoke_token

TOKEN = re.compile(r"^bt_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$")


def get(headers: dict[str, str], url: str = "/batches"):
    return APIClient().get(url, **headers)


def assert_401(response) -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"


@pytest.fixture
def token(alice) -> tuple[ApiToken, str]:
    return issue_token(user=alice, name="tests")


def test_bearer_header(token):
    assert get({"HTTP_AUTHORIZATION": f"Bearer {token[1]}"}).status_code == 200
    assert get({"HTTP_AUTHORIZATION": f"bearer {token[1]}"}).status_code == 200


def test_x_api_key_header(token):
    assert get({"HTTP_X_API_KEY": token[1]}).status_code == 200


def test_token_format_and_last_used(token):
    row, plaintext = token
    assert TOKEN.match(plaintext)
    assert row.last_used_at is None
    get({"HTTP_X_API_KEY": plaintext})
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_stored_hashed_never_in_clear(token):
    row, plaintext = token
    secret = plaintext.split("_", 2)[2]  # the secret itself may contain "_"
    row.refresh_from_db()
    assert row.prefix == plaintext.split("_")[1]
    assert plaintext not in row.digest and secret not in row.digest
    assert len(row.digest) == 64
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert secret not in dump.getvalue()
    assert plaintext not in dump.getvalue()


def test_expired_token_is_401(alice):
    _, plaintext = issue_token(user=alice, expires_at=timezone.now() - timedelta(seconds=1))
    assert_401(get({"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}))
    assert_401(get({"HTTP_X_API_KEY": plaintext}))


def test_token_expiring_later_works(alice):
    _, plaintext = issue_token(user=alice, expires_at=timezone.now() + timedelta(days=1))
    assert get({"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}).status_code == 200


def test_revoked_token_is_401(token):
    row, plaintext = token
    revoke_token(token=row)
    assert_401(get({"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}))
    assert_401(get({"HTTP_X_API_KEY": plaintext}))


def test_inactive_user_is_401(alice, token):
    alice.is_active = False
    alice.save()
    assert_401(get({"HTTP_AUTHORIZATION": f"Bearer {token[1]}"}))


def test_wrong_secret_with_right_prefix_is_401(token):
    _, plaintext = token
    tag, prefix, secret = plaintext.split("_", 2)
    wrong = f"{tag}_{prefix}_{'A' * len(secret)}"
    assert_401(get({"HTTP_AUTHORIZATION": f"Bearer {wrong}"}))
    assert_401(get({"HTTP_AUTHORIZATION": f"Bearer {plaintext[:-1]}"}))
    assert authenticate_token(plaintext=wrong) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_AUTHORIZATION": "Bearer "},
        {"HTTP_AUTHORIZATION": "Bearer nonsense"},
        {"HTTP_AUTHORIZATION": "Bearer bt_aaaaaaaaaaaa_bbbbbbbb"},
        {"HTTP_X_API_KEY": "bt_short_x"},
        {"HTTP_X_API_KEY": " "},
        {"HTTP_AUTHORIZATION": "Basic YWxpY2U6c2VjcmV0"},
        {},
    ],
)
def test_bad_or_missing_credentials_are_401(db, headers):
    assert_401(get(headers))


def test_the_same_401_for_every_kind_of_bad_token(token, alice):
    """Unknown prefix, wrong secret and revoked token answer alike."""
    row, plaintext = token
    _, revoked = issue_token(user=alice)
    revoke_token(token=ApiToken.objects.get(prefix=revoked.split("_")[1]))
    bodies = {get({"HTTP_AUTHORIZATION": f"Bearer {t}"}).content for t in ("bt_zzzzzzzzzzzz_" + "x" * 43, plaintext[:-1] + "?", revoked)}
    assert len(bodies) == 1


# --- issue_token ---------------------------------------------------------------------


def run_issue_token(*args: str) -> str:
    out = io.StringIO()
    call_command("issue_token", *args, stdout=out)
    return out.getvalue()


def test_issue_token_prints_only_the_token(alice):
    out = run_issue_token("alice")
    assert out.endswith("\n") and out.count("\n") == 1
    plaintext = out.strip()
    assert TOKEN.match(plaintext)
    assert get({"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}).status_code == 200
    assert ApiToken.objects.get(user=alice).expires_at is None


def test_issue_token_create_user_and_staff(db):
    plaintext = run_issue_token("carol", "--create-user", "--staff", "--name", "ci").strip()
    carol = User.objects.get(username="carol")
    assert carol.is_staff and not carol.is_superuser and not carol.has_usable_password()
    assert authenticate_token(plaintext=plaintext).user == carol
    assert ApiToken.objects.get(user=carol).name == "ci"
    run_issue_token("carol", "--create-user")  # an existing user: just another token
    assert ApiToken.objects.filter(user=carol).count() == 2


def test_issue_token_staff_for_existing_user(alice):
    run_issue_token("alice", "--staff")
    alice.refresh_from_db()
    assert alice.is_staff


def test_issue_token_with_expiry(alice):
    run_issue_token("alice", "--days", "7")
    expires = ApiToken.objects.get(user=alice).expires_at
    assert timedelta(days=6, hours=23) < expires - timezone.now() <= timedelta(days=7)


def test_issue_token_unknown_user_without_create_user(db):
    with pytest.raises(CommandError, match="no user 'nobody'.*--create-user"):
        run_issue_token("nobody")
    assert not User.objects.filter(username="nobody").exists()
    assert not ApiToken.objects.exists()


def test_issue_token_refuses_negative_days(alice):
    with pytest.raises(CommandError, match="--days"):
        run_issue_token("alice", "--days", "-1")


def test_operators_list_and_revoke_tokens_from_the_command_line(alice, bob, db):
    import io

    from django.core.management import CommandError, call_command
    from rest_framework.test import APIClient

    from accounts.models import ApiToken
    from accounts.services import issue_token

    first, first_secret = issue_token(user=alice, name="laptop")
    _, second_secret = issue_token(user=alice, name="ci")
    bobs, bobs_secret = issue_token(user=bob)
    out = io.StringIO()
    call_command("list_tokens", stdout=out)
    listing = out.getvalue()
    assert first.prefix in listing and bobs.prefix in listing and "laptop" in listing and "3 token(s)" in listing
    # bt_<prefix>_<secret>: the secret may itself hold "_" (url-safe base64), so split
    # from the left (splitting at the last "_" once checked a one-letter tail).
    assert first_secret not in listing and first_secret.split("_", 2)[2] not in listing, "a secret was printed"
    out = io.StringIO()
    call_command("list_tokens", "bob", stdout=out)
    assert bobs.prefix in out.getvalue() and first.prefix not in out.getvalue()

    with pytest.raises(CommandError, match="no token with prefix nosuchprefix"):
        call_command("revoke_token", first.prefix, "nosuchprefix", stdout=io.StringIO())
    assert ApiToken.objects.get(pk=first.pk).revoked_at is None, "nothing is revoked when a prefix is wrong"
    call_command("revoke_token", first.prefix, stdout=io.StringIO())

    def status(secret: str) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client.get("/batches").status_code

    assert (status(first_secret), status(second_secret), status(bobs_secret)) == (401, 200, 200)
    call_command("revoke_token", "--user", "alice", stdout=io.StringIO())
    assert (status(second_secret), status(bobs_secret)) == (401, 200)
    out = io.StringIO()
    call_command("list_tokens", "--active", stdout=out)
    assert "1 token(s)" in out.getvalue() and bobs.prefix in out.getvalue()


def test_revoke_token_counts_only_what_it_revoked_and_knows_its_users(alice, db):
    """`revoke_token --user alice` said 'revoked 2 token(s)' of two tokens revoked
    before, and `--user nobody` said 'revoked 0 token(s)' and exited 0."""
    import io

    from django.core.management import CommandError, call_command

    issue_token(user=alice)
    issue_token(user=alice)
    out = io.StringIO()
    call_command("revoke_token", "--user", "alice", stdout=out)
    assert "revoked 2 token(s)" in out.getvalue()
    out = io.StringIO()
    call_command("revoke_token", "--user", "alice", stdout=out)
    assert "revoked 0 token(s)" in out.getvalue() and "2 already revoked" in out.getvalue()
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("revoke_token", "--user", "nobody", stdout=io.StringIO())


def test_token_commands_refuse_what_they_cannot_store_in_one_line(alice, db):
    """issue_token --days 3000000 was an OverflowError, a 500-character --name and an
    empty or 200-character user name were database tracebacks, and a user name with
    spaces was created though the admin refuses it; revoke_token took only the bare
    prefix (not bt_<prefix> or the whole token, which list_tokens users paste)."""
    import io

    from django.core.management import CommandError, call_command

    from accounts.models import ApiToken

    for args, words in [
        (["alice", "--days", "3000000"], "--days must be"),
        (["alice", "--name", "n" * 500], "--name must be at most 100"),
        (["alice", "--name", "two\nlines"], "--name must be one line"),  # it broke list_tokens' columns
        (["", "--create-user"], "cannot create user"),
        (["u" * 200, "--create-user"], "cannot create user"),
        (["bad user name", "--create-user"], "cannot create user"),
    ]:
        with pytest.raises(CommandError, match=words):
            call_command("issue_token", *args, stdout=io.StringIO())
    out = io.StringIO()
    call_command("issue_token", "alice", stdout=out)
    whole = out.getvalue().strip()
    call_command("revoke_token", whole, stdout=io.StringIO())
    assert ApiToken.objects.get(prefix=whole.split("_")[1]).revoked_at is not None
