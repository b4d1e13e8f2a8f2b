"""The operators' admin in a real browser (issue 10): Playwright drives Debian's Chromium
(/usr/bin/chromium; Playwright's own browser download is never used) against a live
server on the test database, with real worker processes where jobs must run. Each test
is what an operator does by clicking: log in, find a user's failed jobs, read a job,
cancel a running batch, get a tool edit wrong; the last one saves full-page screenshots
under test-output/screenshots/ for a person to look at.

Without Playwright or Chromium these skip and say why; CI (.ci/run) installs Chromium
and sets BATCHES_REQUIRE_BROWSER=1, and there a missing browser fails them."""

import os
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User

from jobs.models import Attempt, Job, JobEvent, Worker
from jobs.statuses import CANCELLED_REASON, Status
from tests.conftest import make_client
from tests.worker_helpers import ROOT, make_batch, script_tool, start_worker, statuses, stop_worker_process, wait_for

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # reported by _browser_problem()
    Page = expect = sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "a long enough password"  # noqa: S105
WIDTH = 1366  # an operator's laptop screen (issue 21: the tables fit it)


def _browser_problem() -> str | None:
    if sync_playwright is None:
        return "Playwright is not installed (make test installs it from requirements-dev.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


_PROBLEM = _browser_problem()
if _PROBLEM and os.environ.get("BATCHES_REQUIRE_BROWSER") == "1":
    pytest.fail(f"BATCHES_REQUIRE_BROWSER is set: {_PROBLEM}", pytrace=False)

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the live server's thread reads what the test writes
    pytest.mark.slow,
    pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""),
]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an asyncio loop running in this thread; Django would
    # then refuse the test's own ORM calls (SynchronousOnlyOperation) although nothing
    # here is asynchronous. For this module only.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--headless", "--no-sandbox"])
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": WIDTH, "height": 900})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def chief(db) -> User:
    return User.objects.create_user("chief", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def viewer(db) -> User:
    """A staff operator who may view every model of the service and change nothing."""
    user = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_", content_type__app_label__in=["accounts", "batches", "jobs"])
    )
    return user


@pytest.fixture
def worker():
    """Starts `manage.py runworker` processes on the test database (local executor);
    stops them at the end, which also kills what they still run."""
    started = []

    def start(cpus: int = 2):
        process = start_worker("--cpus", str(cpus), "--memory", "4096")
        started.append(process)
        return process

    yield start
    for process in started:
        stop_worker_process(process)


def log_in(page: Page, username: str) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))  # the admin sends strangers to its form
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text(f"Welcome, {username}")
    expect(page.locator("h1")).to_have_text("Site administration")


def go_to(page: Page, model: str) -> None:
    """To a model's list as a person would: home (the breadcrumbs' first link), then
    the model's name in the list of apps."""
    home = page.locator(".breadcrumbs").get_by_role("link", name="Home")
    if home.count():
        home.click()
    page.locator("#content-main").get_by_role("link", name=model, exact=True).click()


def log_out(page: Page) -> None:
    page.locator("#logout-form button").click()
    expect(page.locator("h1")).to_have_text("Logged out")


def rows(page: Page):
    return page.locator("#result_list tbody tr")


def column(page: Page, name: str) -> list[str]:
    return [
        text.strip() for text in page.locator(f"#result_list tbody td.field-{name}, #result_list tbody th.field-{name}").all_inner_texts()
    ]


def reasons(page: Page) -> list[str]:
    """Each job's whole reason, from its tooltip: the column shows it cut to its width,
    and not again when the row above has the same."""
    cells = page.locator("#result_list tbody td.field-reason_text")
    return [
        (cell.locator("span").get_attribute("title") if cell.locator("span").count() else cell.inner_text()).strip() for cell in cells.all()
    ]


def post_with_the_session(page: Page, url: str, fields: list[tuple[str, str]]):
    """A form POST with the page's own session and CSRF token, as a hand-made form (or
    an old tab) would send it: what the page does not offer must not work either."""
    token = next(cookie["value"] for cookie in page.context.cookies() if cookie["name"] == "csrftoken")
    return page.request.post(
        url,
        data=urlencode([("csrfmiddlewaretoken", token), *fields]),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": page.url},
    )


def test_a_view_only_operator_changes_nothing_and_a_superuser_may(page, viewer, chief, alice, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "one"}}, {"args": {"message": "two"}}])
    ids = [str(pk) for pk in Job.objects.filter(batch=batch).values_list("pk", flat=True)]

    log_in(page, "viewer")
    go_to(page, "Jobs")
    expect(rows(page)).to_have_count(2)
    expect(page.locator("select[name=action]")).to_have_count(0)  # no action to choose
    # Sent anyway, with the viewer's own session: nothing happens.
    for action in ("cancel", "retry"):
        answer = post_with_the_session(page, "/admin/jobs/job/", [("action", action), *[("_selected_action", pk) for pk in ids]])
        assert answer.status in (200, 302, 403)
    page.reload()
    assert column(page, "status_badge") == ["Submitted", "Submitted"]
    assert statuses(batch) == ["SUBMITTED", "SUBMITTED"]
    go_to(page, "Batches")
    expect(rows(page)).to_have_count(1)
    expect(page.locator("select[name=action]")).to_have_count(0)
    answer = post_with_the_session(page, "/admin/batches/batch/", [("action", "cancel_batches"), ("_selected_action", str(batch.pk))])
    assert answer.status in (200, 302, 403)
    assert statuses(batch) == ["SUBMITTED", "SUBMITTED"], "a view-only operator cancelled a batch"
    # A job page: every field shown, nothing to save.
    page.goto(f"/admin/jobs/job/{ids[0]}/change/")
    expect(page.locator(".field-status .readonly")).to_have_text("Submitted")
    expect(page.locator("input[name=_save], input[name=_continue], input[name=_addanother]")).to_have_count(0)
    expect(page.get_by_role("link", name="Delete")).to_have_count(0)
    log_out(page)

    log_in(page, "chief")
    go_to(page, "Jobs")
    expect(page.locator("select[name=action] option")).to_have_text(["---------", "Cancel selected jobs", "Retry selected FAILED jobs"])
    # The same action, chosen on the page by the superuser, takes effect.
    page.locator(f"input[name=_selected_action][value='{ids[0]}']").check()
    page.locator("select[name=action]").select_option(label="Cancel selected jobs")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text("Cancelled 1 job(s); 0 of them stop once their attempt has.")
    assert sorted(column(page, "status_badge")) == ["Failed", "Submitted"]
    assert CANCELLED_REASON in reasons(page)
    # Job pages have no save buttons for anyone (only the state machine writes a job)...
    page.goto(f"/admin/jobs/job/{ids[1]}/change/")
    expect(page.locator("input[name=_save]")).to_have_count(0)
    # ... while a tool, which an operator does edit, has them.
    page.goto(f"/admin/batches/tool/{catalog['tools']['echo'].pk}/change/")
    expect(page.locator("input[name=_save]")).to_have_count(1)


def test_an_operator_finds_one_users_failed_jobs_by_clicking(page, viewer, alice, bob, catalog):
    echo = catalog["tools"]["echo"]
    alices = make_batch(alice, echo, catalog, [{"args": {"message": str(i)}} for i in range(4)])
    bobs = make_batch(bob, echo, catalog, [{"args": {"message": str(i)}} for i in range(3)])
    failures = {
        (alices, 0): "exit code 3",
        (alices, 2): "timed out after 600 s",
        (bobs, 1): "exit code 7",
    }
    for (batch, index), reason in failures.items():
        Job.objects.filter(batch=batch, index=index).update(status=Status.FAILED, reason=reason)
    Job.objects.filter(batch=alices, index=1).update(status=Status.SUCCEEDED)
    alices_failed = {str(Job.objects.get(batch=alices, index=i).pk) for i in (0, 2)}

    log_in(page, "viewer")
    go_to(page, "Jobs")
    expect(rows(page)).to_have_count(7)
    filters = page.locator("#changelist-filter")
    filters.locator("details[data-filter-title=status]").get_by_role("link", name="Failed", exact=True).click()
    expect(rows(page)).to_have_count(3)
    # The owner's name in the search box keeps the status filter.
    page.locator("#searchbar").fill("alice")
    page.locator("#searchbar").press("Enter")
    expect(rows(page)).to_have_count(2)
    assert "status__exact=FAILED" in page.url and "q=alice" in page.url
    # Each job by the end of its id, the whole id in the tooltip.
    cells = page.locator("#result_list tbody th.field-job span")
    assert {cell.get_attribute("title") for cell in cells.all()} == alices_failed
    assert {text.strip() for text in cells.all_inner_texts()} == {f"…{job_id[-12:]}" for job_id in alices_failed}
    assert column(page, "owner") == ["alice", "alice"]
    assert sorted(reasons(page)) == ["exit code 3", "timed out after 600 s"]
    for cell in page.locator("#result_list tbody td.field-reason").all():
        expect(cell).to_be_in_viewport()  # on screen, not scrolled away to the right
    for cell in page.locator("#result_list tbody td.field-duration").all():
        expect(cell).to_be_in_viewport()  # the last column too, at 1,400 px
    # The owner filter in the sidebar does the same without typing.
    page.locator("#searchbar").fill("")
    page.locator("#searchbar").press("Enter")
    expect(rows(page)).to_have_count(3)
    filters.locator("details[data-filter-title=owner]").get_by_role("link", name="bob", exact=True).click()
    expect(rows(page)).to_have_count(1)
    assert column(page, "owner") == ["bob"] and reasons(page) == ["exit code 7"]
    # Both choices are shown as selected.
    expect(filters.locator("details[data-filter-title=owner] li.selected")).to_have_text("bob")
    expect(filters.locator("details[data-filter-title=status] li.selected")).to_have_text("Failed")
    page.get_by_role("link", name="Clear all filters").click()
    expect(rows(page)).to_have_count(7)


def test_an_operator_reads_a_jobs_attempts_events_and_log(page, chief, alice, catalog, worker):
    lines = 1000  # some 19 kB: more than a page would show
    # The script's text is on the page too (the job's arguments): what the log says is computed.
    script = f'for i in $(seq 1 {lines}); do echo "line $i of the log"; done; echo "the last words: $((6 * 7))" >&2; exit 3'
    whole_log = "".join(f"line {i} of the log\n" for i in range(1, lines + 1)) + "the last words: 42\n"
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}])
    job = Job.objects.get(batch=batch)
    worker(cpus=1)
    wait_for(lambda: statuses(batch) == ["FAILED"], timeout=30, message=f"the job did not fail: {statuses(batch)}")

    log_in(page, "chief")
    go_to(page, "Jobs")
    page.locator(f'#result_list a:has(span[title="{job.pk}"])').click()  # the row's link: the end of its id
    expect(page.locator(".field-status .readonly")).to_have_text("Failed")
    expect(page.locator(".field-reason .readonly")).to_have_text("exit code 3")
    # The attempts: one, ended with exit code 3, on its worker.
    attempts = page.locator("fieldset", has=page.get_by_role("heading", name="Attempts"))
    expect(attempts.locator("td.field-exit_code")).to_have_text(["3"])
    expect(attempts.locator("td.field-reason_text")).to_have_text(["exit code 3"])
    expect(attempts.locator("td.field-state")).to_have_text(["Ended"])
    # The timeline of its states, in order.
    events = page.locator("fieldset", has=page.get_by_role("heading", name="Job events"))
    expected = [
        Status(state).label for state in JobEvent.objects.filter(job=job).order_by("time", "pk").values_list("to_status", flat=True)
    ]
    assert expected[0] == "Runnable" and expected[-1] == "Failed", expected
    expect(events.locator("td.field-to_status")).to_have_text(expected)
    expect(events.locator("td.field-from_status").first).to_have_text("Submitted")
    log_path = Path(settings.BATCHES_LOG_DIR) / f"{job.log_id}.log"
    assert log_path.read_text() == whole_log, "the worker wrote another log"

    # The log: its tail on the job page, and a link to the whole of it.
    content = page.locator("#content-main")
    if "the last words: 42" not in content.inner_text():
        pytest.xfail(
            "defect: the job page shows no log tail and no link to the whole log (only the log id as text); "
            "GET /logs/<id> serves the job's owner only, so an operator cannot read it at all"
        )
    expect(content).to_contain_text(f"line {lines - 1} of the log\nline {lines} of the log\nthe last words: 42")
    link = content.get_by_role("link", name=re.compile(r"\blog\b", re.IGNORECASE))
    expect(link).to_have_count(1)
    link.click()
    expect(page.locator("body")).to_contain_text("the last words: 42")
    assert page.locator("body").inner_text() == whole_log


def test_an_operator_cancels_a_running_batch_from_the_batch_list(page, chief, alice, catalog, worker):
    batch = make_batch(alice, catalog["tools"]["sleep"], catalog, [{"args": {"seconds": 120}} for _ in range(3)], name="three sleepers")
    worker(cpus=2)  # two of the three run, the third waits
    wait_for(lambda: statuses(batch).count("RUNNING") == 2, timeout=30, message="two jobs did not start")

    log_in(page, "chief")
    go_to(page, "Batches")
    page.get_by_role("link", name=str(batch.pk)).click()
    counts = page.locator(".field-counts .readonly")
    expect(counts).to_contain_text("running 2")
    page.go_back()
    page.locator(f"input[name=_selected_action][value='{batch.pk}']").check()
    page.locator("select[name=action]").select_option(label="Cancel selected batches (their unfinished jobs)")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_have_text("Cancelling 1 batch(es): 1 queued job(s), 2 running one(s) once they stop.")

    page.get_by_role("link", name=str(batch.pk)).click()
    # The queued job is FAILED at once; the running ones once their worker has stopped them.
    deadline = time.monotonic() + 20
    while "failed 3" not in counts.inner_text() and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()
    expect(counts).to_contain_text("failed 3")
    expect(counts).not_to_contain_text("running")
    assert set(Job.objects.filter(batch=batch).values_list("reason", flat=True)) == {CANCELLED_REASON}
    page.locator(".field-jobs a").click()
    expect(rows(page)).to_have_count(3)
    assert reasons(page) == [CANCELLED_REASON] * 3


def test_a_bad_tool_edit_is_refused_with_a_readable_error(page, chief, alice, catalog):
    tool = catalog["tools"]["echo"]
    before = (tool.command, tool.parameters)
    log_in(page, "chief")
    go_to(page, "Tools")
    page.get_by_role("link", name="echo", exact=True).click()
    command, parameters = page.get_by_label("Command"), page.get_by_label("Parameters")
    save = page.get_by_role("button", name="Save", exact=True)
    command.fill('"/bin/echo hi"')  # a JSON string, not a list
    parameters.fill('{"m": {"type": "strin"}}')
    save.click()

    # Both fields' errors at once (the form used to tell one, then the other).
    expect(page.locator(".errornote")).to_have_text("Please correct the errors below.")
    expect(page.locator(".messagelist")).to_have_count(0)  # no "changed successfully"
    expect(page.locator(".field-parameters .errorlist")).to_have_text(
        "parameter m: type must be one of string, integer, number, boolean, choice, path, not 'strin'"
    )
    expect(page.locator(".field-command .errorlist")).to_contain_text("command must be a non-empty list of strings")
    expect(parameters).to_have_value('{"m": {"type": "strin"}}')  # what was typed stays, to be put right
    expect(command).to_have_value('"/bin/echo hi"')
    # The type put right, the command's error stays, alone.
    parameters.fill('{"m": {"type": "string"}}')
    save.click()
    expect(page.locator(".field-command .errorlist")).to_contain_text("command must be a non-empty list of strings")
    expect(page.locator(".field-parameters .errorlist")).to_have_count(0)
    # Typed without quotes, as a shell line: not JSON at all.
    command.fill("/bin/echo hi")
    save.click()
    expect(page.locator(".field-command .errorlist")).to_have_text("Enter a valid JSON.")
    expect(page.locator(".messagelist")).to_have_count(0)

    tool.refresh_from_db()
    assert (tool.command, tool.parameters) == before, "the bad edit was saved"
    answer = page.request.get("/tools", headers={"Authorization": f"Bearer {make_client(alice).token}"})
    assert answer.status == 200, answer.text()
    echo = next(t for t in answer.json() if t["tool_name"] == "echo")
    assert echo["command"] == ["/bin/echo", "{message}"] and list(echo["parameters"]) == ["message"]


def test_screenshots_of_the_operators_pages(page, chief, alice, bob, catalog, worker):
    """Full-page PNGs of the dashboard, the batch list, a batch page, the job list and a
    job page, with real jobs behind them, for a person to look at."""
    tools = catalog["tools"]
    echoes = make_batch(alice, tools["echo"], catalog, [{"args": {"message": f"hello {i}"}} for i in range(3)], name="greetings")
    failing = make_batch(bob, tools["fail"], catalog, [{"args": {"code": code}} for code in (0, 3, 7, 1)], name="exit codes")
    # A long reason, as operators meet them (this one never runs).
    Job.objects.filter(batch=failing, index=3).update(
        status=Status.FAILED, reason="attempt lost: worker lab-node-17.example.org:4242 stopped renewing its lease (no heartbeat for 95 s)"
    )
    runner = worker(cpus=1)
    wait_for(lambda: Job.objects.filter(batch__in=[echoes, failing], status__in=["SUCCEEDED", "FAILED"]).count() == 7, timeout=30)
    sleepers = make_batch(alice, tools["sleep"], catalog, [{"args": {"seconds": 60}} for _ in range(3)], name="a long night")
    wait_for(lambda: "RUNNING" in statuses(sleepers), timeout=30)
    assert runner.poll() is None
    failed = Job.objects.get(batch=failing, index=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shoot(name: str, url: str, must_show: str) -> None:
        page.goto(url)
        expect(page.locator("#content")).to_contain_text(must_show)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, path

    log_in(page, "chief")
    shoot("dashboard", "/admin/dashboard/", "Jobs per state (10)")
    states = dict(
        zip(page.locator("#states thead th").all_text_contents(), page.locator("#states tbody td").all_text_contents(), strict=True)
    )
    assert (states["RUNNING"], states["SUCCEEDED"], states["FAILED"]) == ("1", "4", "3"), states
    waiting = sum(int(states[state]) for state in ("SUBMITTED", "PENDING", "RUNNABLE"))
    assert waiting + int(states["STARTING"]) == 2, states  # a worker may hold one job ahead (STARTING)
    expect(page.locator("#queue")).to_contain_text(f"{waiting} job(s) waiting to run; the oldest since")
    # Its live attempts, running and about to start (held ahead of a free core): a worker
    # of 1 cpu showed "live attempts 2", which read as over-commitment.
    running = Attempt.objects.filter(end_time__isnull=True, state="RUNNING").count()
    launching = Attempt.objects.filter(end_time__isnull=True, state="LAUNCHING").count()
    assert running == 1, running
    expect(page.locator("#workers tbody tr td:nth-child(4)")).to_have_text([str(running)])
    expect(page.locator("#workers tbody tr td:nth-child(5)")).to_have_text([str(launching)])
    shoot("batch-list", "/admin/batches/batch/", "a long night")
    expect(rows(page)).to_have_count(3)
    shoot("batch-page", f"/admin/batches/batch/{failing.pk}/change/", "succeeded 1, failed 3")
    shoot("job-list", "/admin/jobs/job/", "exit code 7")
    expect(rows(page)).to_have_count(10)
    shoot("job-page", f"/admin/jobs/job/{failed.pk}/change/", "exit code 3")

    expect(page.locator("fieldset", has=page.get_by_role("heading", name="Job events")).locator("td.field-to_status").last).to_have_text(
        "Failed"
    )
    shoot("attempt-list", "/admin/jobs/attempt/", "exit code 7")
    shoot("worker-page", f"/admin/jobs/worker/{Worker.objects.get(state='ACTIVE').pk}/change/", "Isolation")


def test_an_operator_issues_a_token_sees_it_once_and_revokes_it(page, chief, alice, catalog):
    log_in(page, "chief")
    go_to(page, "API tokens")
    page.get_by_role("link", name="Add API token").click()
    # The user is picked by typing part of the name (autocomplete).
    page.locator(".field-user .select2-selection").click()
    page.locator(".select2-search__field").fill("ali")
    page.get_by_role("option", name="alice").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("h1")).to_have_text("Token issued")
    plaintext = page.locator("#issued-token").inner_text().strip()
    assert plaintext.startswith("bt_")
    answer = page.request.get("/tools", headers={"Authorization": f"Bearer {plaintext}"})
    assert answer.status == 200
    # Shown once: the token's page and the list never show it again.
    page.get_by_role("link", name="The token's page").click()
    expect(page.locator("#content")).not_to_contain_text(plaintext)
    go_to(page, "API tokens")
    expect(page.locator("#content")).not_to_contain_text(plaintext)
    row = page.locator("#result_list tbody tr", has_text="laptop")
    row.locator("input.action-select").check()
    page.locator("select[name=action]").select_option(label="Revoke selected tokens")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text("Revoked 1 token(s).")
    assert page.request.get("/tools", headers={"Authorization": f"Bearer {plaintext}"}).status == 401
