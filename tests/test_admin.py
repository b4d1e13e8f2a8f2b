"""The operators' admin: every model's list and detail page renders for staff, the
actions go through the services (status is never edited by hand), and deleting a batch
takes its jobs and events with it."""

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import share_admin
from accounts.models import ApiToken, ShareGroup
from accounts.shares import set_group, set_share
from batches.models import Batch
from jobs import fairshare
from jobs.models import Attempt, Job, JobEvent, Usage
from jobs.statuses import Status
from tests.conftest import make_client, submission

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(alice, catalog) -> Batch:
    client = make_client(alice)
    response = client.post("/batches", submission(catalog), format="json")
    assert response.status_code == 201
    return Batch.objects.get(pk=response.json()["batch_id"])


@pytest.mark.parametrize(
    "page",
    [
        "/admin/",
        "/admin/batches/tool/",
        "/admin/batches/filesystem/",
        "/admin/batches/batch/",
        "/admin/jobs/job/",
        "/admin/jobs/job/?status__exact=SUBMITTED",
        "/admin/jobs/worker/",
        "/admin/jobs/attempt/",
        "/admin/accounts/apitoken/",
    ],
)
def test_every_list_renders(admin_client, batch, page):
    response = admin_client.get(page)
    assert response.status_code == 200, page
    assert response["Content-Type"].startswith("text/html")


def test_detail_pages_render(admin_client, batch, catalog):
    job = Job.objects.filter(batch=batch).first()
    attempt = Attempt.objects.create(job=job, number=1, executor="local", external_id="4242", reason="exit code 3")
    for url in [
        f"/admin/batches/batch/{batch.pk}/change/",
        f"/admin/jobs/job/{job.pk}/change/",
        f"/admin/batches/tool/{catalog['tools']['echo'].pk}/change/",
        f"/admin/batches/filesystem/{catalog['filesystems']['scratch'].pk}/change/",
        f"/admin/accounts/apitoken/{ApiToken.objects.first().pk}/change/",
        f"/admin/jobs/attempt/{attempt.pk}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    # The job page shows its attempts.
    assert b"4242" in admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content


def test_ordinary_users_cannot_enter(alice):
    client = Client()
    client.force_login(alice)
    response = client.get("/admin/jobs/job/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_cancel_action_uses_the_state_machine(admin_client, batch):
    ids = [str(pk) for pk in Job.objects.filter(batch=batch).values_list("pk", flat=True)]
    response = admin_client.post("/admin/jobs/job/", {"action": "cancel", "_selected_action": ids})
    assert response.status_code == 302
    assert set(Job.objects.filter(batch=batch).values_list("status", "reason")) == {(Status.FAILED, "Cancelled by user")}
    assert JobEvent.objects.filter(job__batch=batch, to_status=Status.FAILED).count() == 2

    response = admin_client.post("/admin/jobs/job/", {"action": "retry", "_selected_action": ids})
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {Status.RUNNABLE}


def test_deleting_a_batch_takes_its_jobs_and_events(admin_client, batch):
    Job.objects.filter(batch=batch).update(reason="x")  # jobs exist
    admin_client.post("/admin/jobs/job/", {"action": "cancel", "_selected_action": [str(Job.objects.filter(batch=batch).first().pk)]})
    assert JobEvent.objects.filter(job__batch=batch).exists()
    response = admin_client.post(f"/admin/batches/batch/{batch.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Job.objects.filter(batch_id=batch.pk).exists()
    assert not JobEvent.objects.filter(job__batch_id=batch.pk).exists()


def test_a_token_issued_in_the_admin_is_shown_once_and_works(admin_client, alice):
    response = admin_client.post(
        "/admin/accounts/apitoken/add/", {"user": alice.pk, "name": "laptop", "expires_at_0": "", "expires_at_1": ""}
    )
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    plaintext = response.context["plaintext"]
    assert plaintext.startswith("bt_") and plaintext in response.content.decode()
    token = ApiToken.objects.get(name="laptop")
    assert token.user == alice and plaintext not in token.digest
    assert make_client(alice).get("/tools", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 200
    # Never again: not on its page, not in the list.
    assert plaintext not in admin_client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    assert plaintext not in admin_client.get("/admin/accounts/apitoken/").content.decode()


def test_an_operator_who_is_no_superuser_issues_tokens_for_ordinary_users_only(alice, root, db):
    """A token acts as its user: with only add_apitoken, an operator could have issued
    one for a superuser and acted as them through the API."""
    from django.contrib.auth.models import Permission, User

    issuer = User.objects.create_user("issuer", is_staff=True)
    issuer.user_permissions.add(*Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken"]))
    client = Client()
    client.force_login(issuer)
    form = {"name": "x", "expires_at_0": "", "expires_at_1": ""}
    refused = client.post("/admin/accounts/apitoken/add/", {**form, "user": root.pk})
    assert "Only a superuser may issue a token for a staff account." in str(refused.context["adminform"].form.errors["user"])
    assert not ApiToken.objects.filter(user=root, name="x").exists()
    issued = client.post("/admin/accounts/apitoken/add/", {**form, "user": alice.pk})
    assert issued.status_code == 200 and issued.context["plaintext"].startswith("bt_")


def test_an_operator_who_is_no_superuser_cannot_extend_a_staff_token_or_issue_an_expired_one(alice, root, db):
    """With add/change on tokens, a non-superuser could not issue a superuser's token but
    could extend one to 2099; a token could be issued already expired, unsaid."""
    from django.contrib.auth.models import Permission, User

    from accounts.services import issue_token

    operator = User.objects.create_user("tokenop", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["add_apitoken", "change_apitoken", "view_apitoken"]))
    client = Client()
    client.force_login(operator)
    roots, _ = issue_token(user=root, name="root's")
    change = {"name": "mine now", "expires_at_0": "2099-01-01", "expires_at_1": "00:00:00"}
    assert client.post(f"/admin/accounts/apitoken/{roots.pk}/change/", change).status_code == 403
    roots.refresh_from_db()
    assert roots.name == "root's" and roots.expires_at is None or roots.expires_at.year != 2099
    alices, _ = issue_token(user=alice)
    assert client.post(f"/admin/accounts/apitoken/{alices.pk}/change/", change).status_code == 302, "an ordinary user's is fine"
    expired = client.post(
        "/admin/accounts/apitoken/add/", {"user": alice.pk, "name": "old", "expires_at_0": "2000-01-01", "expires_at_1": "00:00:00"}
    )
    assert "in the future" in str(expired.context["adminform"].form.errors["expires_at"])


def test_tokens_are_revoked_by_operators_who_may_change_them(admin_client, alice, db):
    from django.contrib.auth.models import Permission, User

    from accounts.services import issue_token

    token, plaintext = issue_token(user=alice, name="ci")
    viewer = User.objects.create_user("token-viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    client = Client()
    client.force_login(viewer)
    client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is None
    response = admin_client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    anon = Client()
    assert anon.get("/tools", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 401


def test_the_filesystem_list_says_who_is_granted(admin_client, catalog, alice):
    private = catalog["filesystems"]["private"]
    page = admin_client.get("/admin/batches/filesystem/").content.decode()
    assert "everyone (public)" in page and "nobody yet" in page
    private.users.add(alice)
    assert "user alice" in admin_client.get("/admin/batches/filesystem/").content.decode()


@pytest.mark.parametrize(
    ("command", "parameters", "field", "words"),
    [
        ('"/bin/echo hi"', "{}", "command", "non-empty list of strings"),
        ('["/bin/echo", "{m}"]', '{"m": {"type": "strin"}}', "parameters", "type must be one of"),
        ('["/bin/echo", "{other}"]', '{"m": {"type": "string"}}', "command", "undeclared parameters"),
        ('["echo"]', "{}", "command", "absolute path"),
        # A NUL was a 500 (PostgreSQL's jsonb takes no \u0000).
        ('["/bin/echo", "a\\u0000b"]', "{}", "command", "NUL"),
        ('["/bin/echo", "{m}"]', '{"m": {"type": "string", "description": "a\\u0000b"}}', "parameters", "NUL"),
        ('["/bin/echo", "{m}"]', '{"m": {"type": "string", "required": "false"}}', "parameters", "true or false"),
    ],
)
def test_the_tool_form_runs_the_catalogs_checks(admin_client, alice_client, catalog, command, parameters, field, words):
    """Saving a string command or a misspelt parameter type said "changed successfully",
    then GET /tools answered 500 for every user."""
    tool = catalog["tools"]["echo"]
    form = {
        "name": tool.name,
        "description": tool.description,
        "command": command,
        "parameters": parameters,
        "timeout_seconds": "",
        "enabled": "on",
    }
    response = admin_client.post(f"/admin/batches/tool/{tool.pk}/change/", form)
    assert response.status_code == 200, "the form comes back with its error"
    assert words in str(response.context["adminform"].form.errors[field])
    tool.refresh_from_db()
    assert tool.command == ["/bin/echo", "{message}"]
    assert alice_client.get("/tools").status_code == 200


def test_the_tool_form_takes_the_timeouts_the_catalog_takes(admin_client, catalog):
    """timeout_seconds 0 saved here and silently meant the default; the catalog refuses it."""
    tool = catalog["tools"]["echo"]
    form = {"name": tool.name, "description": "", "command": '["/bin/echo", "{message}"]', "parameters": "{}", "enabled": "on"}
    form["parameters"] = '{"message": {"type": "string"}}'
    errors = admin_client.post(f"/admin/batches/tool/{tool.pk}/change/", {**form, "timeout_seconds": "0"}).context["adminform"].form.errors
    assert "from 1 to" in str(errors["timeout_seconds"])


def test_the_tool_form_tells_every_field_that_is_wrong_at_once(admin_client, catalog):
    """With both fields wrong, only the parameters' error was shown; the command's came
    after the parameters were fixed."""
    tool = catalog["tools"]["echo"]
    form = {"name": tool.name, "description": "", "command": '"/bin/echo hi"', "parameters": '{"m": {"type": "strin"}}', "enabled": "on"}
    errors = admin_client.post(f"/admin/batches/tool/{tool.pk}/change/", form).context["adminform"].form.errors
    assert "non-empty list of strings" in str(errors["command"])
    assert "type must be one of" in str(errors["parameters"])


def test_view_only_staff_cannot_cancel_or_retry(batch, db):
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "view_batch"]))
    client = Client()
    client.force_login(viewer)
    ids = [str(pk) for pk in Job.objects.filter(batch=batch).values_list("pk", flat=True)]
    assert client.get("/admin/jobs/job/").status_code == 200
    for action in ("cancel", "retry"):
        client.post("/admin/jobs/job/", {"action": action, "_selected_action": ids})
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"SUBMITTED"}


def test_an_operator_finds_one_users_failed_jobs_and_reads_them(alice, bob, catalog, db):
    """`q=alice` found 0 jobs (exact ids only) and there was no owner filter; times were
    to the minute; read-only job pages showed SAVE buttons."""
    from django.contrib.auth.models import Permission, User
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for owner in (alice, bob):
        make_client(owner).post("/batches", submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(3)]), format="json")
    failed = Job.objects.filter(batch__owner=alice).order_by("index").first()
    Job.objects.filter(pk=failed.pk).update(status=Status.FAILED, reason="exit code 3")
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "view_batch"]))
    client = Client()
    client.force_login(viewer)
    response = client.get("/admin/jobs/job/", {"q": "alice", "status__exact": "FAILED"})
    assert response.status_code == 200
    assert [job.pk for job in response.context["cl"].result_list] == [failed.pk]
    by_owner = client.get("/admin/jobs/job/", {"batch__owner__id": alice.pk})
    assert {job.batch.owner_id for job in by_owner.context["cl"].result_list} == {alice.pk}
    assert len(by_owner.context["cl"].result_list) == 3
    page = by_owner.content.decode()
    assert "exit code 3" in page and ":" in page.split("exit code 3")[-1][:400]  # times carry seconds (after the reason and its tooltip)
    listed = [job.pk for job in client.get("/admin/jobs/job/").context["cl"].result_list]
    assert listed == sorted(listed, reverse=True), "newest first"
    detail = client.get(f"/admin/jobs/job/{failed.pk}/change/").content.decode()
    assert 'name="_save"' not in detail and 'name="_continue"' not in detail
    # The changelist's queries do not grow with its rows (related rows come in the same query).
    client.get("/admin/jobs/job/")
    with CaptureQueriesContext(connection) as few:
        client.get("/admin/jobs/job/", {"batch__owner__id": bob.pk})
    make_client(bob).post("/batches", submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(20)]), format="json")
    with CaptureQueriesContext(connection) as many:
        client.get("/admin/jobs/job/", {"batch__owner__id": bob.pk})
    assert len(many.captured_queries) == len(few.captured_queries)


def test_a_batch_page_shows_its_counts_hardware_and_a_link_to_its_jobs(admin_client, batch, alice):
    Job.objects.filter(batch=batch, index=0).update(status=Status.FAILED)
    page = admin_client.get(f"/admin/batches/batch/{batch.pk}/change/").content.decode()
    assert "1 of 2 ended: failed 1, submitted 1" in page
    assert f'href="/admin/jobs/job/?batch__id__exact={batch.pk}&amp;status__exact=FAILED">failed 1</a>' in page
    assert "1 cpu, 256 MiB per job" in page
    assert 'name="_save"' not in page
    link = f"/admin/jobs/job/?batch__id__exact={batch.pk}"
    assert link in page
    listed = admin_client.get(link).context["cl"].result_list
    assert {job.batch_id for job in listed} == {batch.pk} and len(listed) == 2
    found = admin_client.get("/admin/batches/batch/", {"q": "alice"}).context["cl"].result_list
    assert [b.pk for b in found] == [batch.pk]
    assert [b.pk for b in admin_client.get("/admin/batches/batch/", {"q": str(batch.pk)}).context["cl"].result_list] == [batch.pk]


def test_the_batch_list_shows_each_batchs_progress_and_filters_by_state(admin_client, batch, alice, catalog):
    done = Batch.objects.get(pk=make_client(alice).post("/batches", submission(catalog), format="json").json()["batch_id"])
    Job.objects.filter(batch=done).update(status=Status.SUCCEEDED)
    Job.objects.filter(batch=batch, index=0).update(status=Status.FAILED)
    page = admin_client.get("/admin/batches/batch/").content.decode()
    assert page.count('class="batch-progress"') == 2
    assert "2 of 2 ended: succeeded 2" in page and "1 of 2 ended: failed 1, submitted 1" in page
    assert 'title="1 FAILED"' in page and "width:50.00%" in page

    def listed(state: str) -> set:
        return {b.pk for b in admin_client.get("/admin/batches/batch/", {"state": state}).context["cl"].result_list}

    assert listed("unfinished") == {batch.pk}
    assert listed("ended") == {done.pk}
    assert listed("failed") == {batch.pk}
    assert listed("cancelling") == set()
    admin_client.post("/admin/batches/batch/", {"action": "cancel_batches", "_selected_action": [str(batch.pk)]})
    assert listed("unfinished") == set() and listed("ended") == {batch.pk, done.pk}


def test_batches_are_cancelled_and_retried_from_the_admin_through_the_services(admin_client, batch, db):
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "view_batch"]))
    looker = Client()
    looker.force_login(viewer)
    looker.post("/admin/batches/batch/", {"action": "cancel_batches", "_selected_action": [str(batch.pk)]})
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"SUBMITTED"}, "a view-only operator cancelled"

    response = admin_client.post("/admin/batches/batch/", {"action": "cancel_batches", "_selected_action": [str(batch.pk)]}, follow=True)
    assert "Cancelling 1 batch(es): 2 queued job(s)" in response.content.decode()
    assert set(Job.objects.filter(batch=batch).values_list("status", "reason")) == {("FAILED", "Cancelled by user")}
    assert JobEvent.objects.filter(job__batch=batch, to_status="FAILED").count() == 2
    response = admin_client.post("/admin/batches/batch/", {"action": "retry_batches", "_selected_action": [str(batch.pk)]}, follow=True)
    assert "Retried 2 job(s)." in response.content.decode()
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"RUNNABLE"}


def test_select_all_acts_on_no_more_than_the_list_can_show(admin_client, alice_client, catalog, monkeypatch):
    """'Select all 10000 jobs' under a capped count cancelled all 128,997 that matched, in
    one request of 15 s; select-across on 805 batches ran 37 s. Beyond the bound the
    action is refused, said why, and nothing changes."""
    import core.admin_paging

    monkeypatch.setattr(core.admin_paging, "COUNT_CAP", 5)
    monkeypatch.setattr(core.admin_paging.BoundedActions, "action_limit", 5)
    body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(8)])
    batch_id = alice_client.post("/batches", body, format="json").json()["batch_id"]
    ids = [str(pk) for pk in Job.objects.filter(batch_id=batch_id).values_list("pk", flat=True)]
    response = admin_client.post(
        "/admin/jobs/job/", {"action": "cancel", "_selected_action": ids[:1], "select_across": "1", "index": "0"}, follow=True
    )
    assert "more than 5" in response.content.decode()
    assert not Job.objects.filter(status="FAILED").exists()
    admin_client.post("/admin/jobs/job/", {"action": "cancel", "_selected_action": ids[:3], "index": "0"})
    assert Job.objects.filter(status="FAILED").count() == 3, "a selection within the bound is acted on"


def test_round_two_of_an_operators_attempts(admin_client, alice, root, db, tmp_path):
    """A token operator revoked a superuser's token through the list's action (its change
    page was already refused); deeply nested JSON in the tool form was a 500
    (RecursionError); the filesystem form saved a relative path that sync_catalog refuses."""
    from django.contrib.auth.models import Permission, User

    from accounts.services import issue_token
    from batches.models import Filesystem

    operator = User.objects.create_user("tokenop", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["change_apitoken", "view_apitoken"]))
    client = Client()
    client.force_login(operator)
    roots, _ = issue_token(user=root)
    alices, _ = issue_token(user=alice)
    client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [roots.pk, alices.pk]})
    roots.refresh_from_db()
    alices.refresh_from_db()
    assert roots.revoked_at is None and alices.revoked_at is not None

    deep = "[" * 3000 + "]" * 3000
    form = {"name": "deep", "description": "", "command": '["/bin/true"]', "parameters": deep, "enabled": "on"}
    response = admin_client.post("/admin/batches/tool/add/", form)
    assert response.status_code == 200 and "parameters" in response.context["adminform"].form.errors

    for path in ("relative/x", "/tmp/a\x00b"):
        fs = {"name": "fsx", "description": "", "path": path, "read_only": "", "public": "on"}
        response = admin_client.post("/admin/batches/filesystem/add/", fs)
        assert response.status_code == 200 and "path" in response.context["adminform"].form.errors, path
    fs = {"name": "fsx", "description": "", "path": str(tmp_path) + "/a/../b", "public": "on"}
    assert admin_client.post("/admin/batches/filesystem/add/", fs).status_code == 302
    assert Filesystem.objects.get(name="fsx").path == str(tmp_path / "b"), "kept normalised, as the catalog keeps it"


def test_the_batch_retry_action_retries_at_most_one_batchs_worth_of_jobs(admin_client, alice_client, catalog, settings):
    """100 batches of 100,000 failed jobs each were 10 million rows in one request."""
    settings.BATCHES_MAX_JOBS_PER_BATCH = 3
    ids = []
    for _ in range(2):
        body = submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(2)])
        batch_id = alice_client.post("/batches", body, format="json").json()["batch_id"]
        alice_client.post(f"/batches/{batch_id}/cancel")
        ids.append(batch_id)
    response = admin_client.post("/admin/batches/batch/", {"action": "retry_batches", "_selected_action": ids, "index": "0"}, follow=True)
    assert "more than 3 failed jobs" in response.content.decode()
    assert not Job.objects.exclude(status="FAILED").exists()


# -- fair share: shares, groups and usage ------------------------------------------------


@pytest.fixture
def shares(alice, bob) -> dict:
    return {
        "alice": set_share(user=alice, weight=2, group="astro", group_weight=3),
        "bob": set_share(user=bob, weight=1),
    }


def test_the_share_pages_and_the_usage_page_render(admin_client, shares, alice):
    now = timezone.now()
    fairshare.charge_usage(amounts={alice.pk: 1000.0}, now=now - timezone.timedelta(seconds=fairshare.half_life()))
    group = ShareGroup.objects.get(name="astro")
    pages = {
        "/admin/accounts/usershare/": ["alice", "astro", "bob"],
        f"/admin/accounts/usershare/{shares['alice'].pk}/change/": ["alice", "astro"],
        "/admin/accounts/usershare/add/": [],
        "/admin/accounts/sharegroup/": ["astro"],
        f"/admin/accounts/sharegroup/{group.pk}/change/": ["alice (weight 2)"],
        # Decayed to now: 1,000 cpu-s one half-life ago are 500 (give or take the test's time).
        "/admin/jobs/usage/": ["alice", "astro", '<td class="field-usage_now">500</td>', '<td class="field-recorded">1,000</td>'],
        f"/admin/jobs/usage/{Usage.objects.get(user=alice).pk}/change/": ["alice", '<div class="readonly">500</div>'],
    }
    for url, words in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        for word in words:
            assert word in text, (url, word)
    members = admin_client.get("/admin/accounts/sharegroup/").context["cl"].result_list
    assert [(g.name, g.member_count) for g in members] == [("astro", 1)]
    (row,) = admin_client.get("/admin/jobs/usage/").context["cl"].result_list
    assert row.standing.usage == pytest.approx(500, abs=1) and (row.standing.weight, row.standing.group) == (2, "astro")


def test_a_weight_edited_in_the_admin_is_saved_by_the_service(admin_client, shares, alice, monkeypatch):
    calls = []
    real = share_admin.set_share
    monkeypatch.setattr(share_admin, "set_share", lambda **kw: calls.append(kw) or real(**kw))
    group = ShareGroup.objects.get(name="astro")
    url = f"/admin/accounts/usershare/{shares['alice'].pk}/change/"
    response = admin_client.post(url, {"weight": "5", "group": str(group.pk)})
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    assert calls == [{"user": alice, "weight": 5, "group": "astro", "no_group": False}]
    alice.share.refresh_from_db()
    assert (alice.share.weight, alice.share.group.name) == (5, "astro")
    # Out of the group, through the same service.
    assert admin_client.post(url, {"weight": "5", "group": ""}).status_code == 302
    alice.share.refresh_from_db()
    assert alice.share.group is None and calls[-1]["no_group"] is True
    # On the list, as an editable column.
    listed = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(shares["alice"].pk),
        "form-0-weight": "7",
        "_save": "Save",
    }
    assert admin_client.post("/admin/accounts/usershare/?q=alice", listed).status_code == 302
    alice.share.refresh_from_db()
    assert alice.share.weight == 7 and calls[-1]["weight"] == 7


def test_a_bad_weight_is_refused_on_its_field(admin_client, shares, alice, bob):
    url = f"/admin/accounts/usershare/{shares['alice'].pk}/change/"
    group = ShareGroup.objects.get(name="astro")
    for bad in ("0", "1000001"):
        response = admin_client.post(url, {"weight": bad, "group": str(group.pk)})
        assert response.status_code == 200
        assert response.context["adminform"].form.errors == {"weight": [f"must be between 1 and 1000000, not {bad}"]}
    for bad in ("-1", "lots"):
        response = admin_client.post(url, {"weight": bad, "group": str(group.pk)})
        assert response.status_code == 200 and list(response.context["adminform"].form.errors) == ["weight"]
    alice.share.refresh_from_db()
    assert alice.share.weight == 2
    listed = {"form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-0-id": str(shares["bob"].pk), "form-0-weight": "0"}
    response = admin_client.post("/admin/accounts/usershare/?q=bob", {**listed, "_save": "Save"})
    assert response.status_code == 200 and "must be between 1 and 1000000, not 0" in response.content.decode()
    bob.share.refresh_from_db()
    assert bob.share.weight == 1
    # A group's weight, likewise.
    response = admin_client.post(f"/admin/accounts/sharegroup/{group.pk}/change/", {"weight": "0"})
    assert response.status_code == 200 and response.context["adminform"].form.errors == {"weight": ["must be between 1 and 1000000, not 0"]}
    group.refresh_from_db()
    assert group.weight == 3


def test_shares_and_groups_are_added_through_the_services(admin_client, alice, bob, monkeypatch):
    calls = []
    real = share_admin.set_group
    monkeypatch.setattr(share_admin, "set_group", lambda **kw: calls.append(kw) or real(**kw))
    assert admin_client.post("/admin/accounts/sharegroup/add/", {"name": "genomics", "weight": "4"}).status_code == 302
    assert calls == [{"name": "genomics", "weight": 4}]
    group = ShareGroup.objects.get(name="genomics")
    response = admin_client.post("/admin/accounts/sharegroup/add/", {"name": "not a slug", "weight": "1"})
    assert response.status_code == 200 and list(response.context["adminform"].form.errors) == ["name"]
    response = admin_client.post("/admin/accounts/usershare/add/", {"user": str(bob.pk), "weight": "3", "group": str(group.pk)})
    assert response.status_code == 302
    bob.share.refresh_from_db()
    assert (bob.share.weight, bob.share.group.name) == (3, "genomics")
    response = admin_client.post("/admin/accounts/usershare/add/", {"user": str(bob.pk), "weight": "2"})
    assert response.status_code == 200 and list(response.context["adminform"].form.errors) == ["user"]
    # A group with members stays; an empty one may go. A share is never deleted (set it back instead).
    assert admin_client.post(f"/admin/accounts/sharegroup/{group.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/accounts/usershare/{bob.share.pk}/delete/", {"post": "yes"}).status_code == 403
    empty = set_group(name="empty", weight=1)
    assert admin_client.post(f"/admin/accounts/sharegroup/{empty.pk}/delete/", {"post": "yes"}).status_code == 302
    assert set(ShareGroup.objects.values_list("name", flat=True)) == {"genomics"}


def test_usage_is_read_only(admin_client, alice):
    fairshare.charge_usage(amounts={alice.pk: 60.0}, now=timezone.now())
    row = Usage.objects.get(user=alice)
    assert admin_client.get("/admin/jobs/usage/add/").status_code == 403
    assert admin_client.post(f"/admin/jobs/usage/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/jobs/usage/{row.pk}/change/", {"cpu_seconds": "0"}).status_code == 403
    assert Usage.objects.get(user=alice).cpu_seconds == 60.0


def test_the_usage_page_costs_the_same_whatever_the_users(admin_client, alice):
    def queries() -> int:
        with CaptureQueriesContext(connection) as seen:
            assert admin_client.get("/admin/jobs/usage/").status_code == 200
        return len(seen)

    fairshare.charge_usage(amounts={alice.pk: 60.0}, now=timezone.now())
    one = queries()
    others = [User.objects.create_user(f"user{n}") for n in range(5)]
    set_share(user=others[0], weight=2, group="astro")
    fairshare.charge_usage(amounts={user.pk: 10.0 for user in others}, now=timezone.now())
    assert queries() == one


def test_view_only_staff_see_shares_and_change_no_weight(shares, alice, db):
    from django.contrib.auth.models import Permission

    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_usershare", "view_sharegroup", "view_usage"]))
    client = Client()
    client.force_login(viewer)
    group = ShareGroup.objects.get(name="astro")
    for url in ("/admin/accounts/usershare/", "/admin/accounts/sharegroup/", "/admin/jobs/usage/"):
        assert client.get(url).status_code == 200, url
    assert 'name="form-0-weight"' not in client.get("/admin/accounts/usershare/").content.decode(), "no editable column"
    assert (
        client.post(f"/admin/accounts/usershare/{shares['alice'].pk}/change/", {"weight": "9", "group": str(group.pk)}).status_code == 403
    )
    assert client.post(f"/admin/accounts/sharegroup/{group.pk}/change/", {"weight": "9"}).status_code == 403
    alice.share.refresh_from_db()
    group.refresh_from_db()
    assert (alice.share.weight, group.weight) == (2, 3)


def test_the_batch_page_shows_its_retry_rules(admin_client, alice, catalog):
    from jobs.submission import submit_batch

    rules = [{"on_exit_code": [3, 4], "action": "retry"}, {"on_reason": "out_of_memory", "action": "retry", "memory_factor": 2}]
    batch = submit_batch(
        user=alice,
        tool_id=catalog["tools"]["echo"].pk,
        cpu=1,
        memory=256,
        filesystem_ids=[],
        jobs=[{"args": {"message": "x"}}],
        max_attempts=3,
        retry_rules=rules,
    )
    page = admin_client.get(f"/admin/batches/batch/{batch.pk}/change/").content.decode()
    assert "1. exit code 3, 4: retry<br>2. out_of_memory: retry, memory x2" in page
