"""Tenants apart where their jobs run (issue 17): each service user's jobs run under a
unix account of their own (mapped, or from the pool `job_accounts --pool N` makes),
never root or the service's user; a job with no account waits, saying so; a deployment
that requires sealing starts no job unsealed, whatever one worker's environment says.

Real jobs, real accounts (useradd): without root, bubblewrap or cgroups the sealed
tests skip with the reason; with BATCHES_REQUIRE_ISOLATION=1 (CI) they fail instead."""

import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.job_accounts import NO_ACCOUNT_REASON, JobAccountError, map_job_account, service_uids
from accounts.models import JobAccount
from jobs.models import Job
from jobs.policy import set_isolation_required
from tests.test_isolation import filesystems, isolation, log_of, submit  # noqa: F401 (fixtures)
from tests.worker_helpers import ROOT, all_finished, drive, in_process_loop, python_tool, script_tool, worker_env

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(isolation):  # noqa: F811 (the fixture imported above)
    """Two pool accounts (made once per machine with useradd, recorded per test)."""
    call_command("job_accounts", "--pool", "2", stdout=open(os.devnull, "w"))  # noqa: SIM115
    return list(JobAccount.objects.filter(pooled=True).values_list("username", flat=True))


@pytest.fixture
def loop(isolation):  # noqa: F811
    loop = in_process_loop(isolation=isolation, grace=0.5)
    yield loop
    loop.stop()


def uid_of(job: Job) -> int:
    return int(log_of(job).split()[0])


def test_each_tenant_runs_as_an_account_of_their_own(pool, loop, alice, bob, filesystems):  # noqa: F811
    batches = [submit(user, script_tool(), [filesystems["scratch"]], [{"args": {"script": "id -u"}}]) for user in (alice, bob)]
    for batch in batches:
        drive(loop, all_finished(batch))
    jobs = [Job.objects.get(batch=batch) for batch in batches]
    assert [job.status for job in jobs] == ["SUCCEEDED", "SUCCEEDED"], [job.reason for job in jobs]
    uids = [uid_of(job) for job in jobs]
    assert uids[0] != uids[1]
    assert not set(uids) & service_uids()  # never root, never the service's own user
    assert {alice.job_account.uid, bob.job_account.uid} == set(uids)
    assert {alice.job_account.username, bob.job_account.username} == set(pool)


def test_the_pool_is_idempotent_and_says_what_it_did(isolation, capsys):  # noqa: F811
    call_command("job_accounts", "--pool", "2")
    call_command("job_accounts", "--pool", "2")
    out = capsys.readouterr().out
    assert out.count("pool: 2 account(s)") == 2
    assert JobAccount.objects.filter(pooled=True).count() == 2
    call_command("job_accounts")
    listing = capsys.readouterr().out
    assert "\tpool\t(free)" in listing


def test_a_file_one_tenant_writes_is_not_readable_or_replaceable_by_another(pool, loop, alice, bob, filesystems):  # noqa: F811
    """Alice put sitecustomize.py in the shared scratch; bob's job with scratch on
    PYTHONPATH ran it. Now what a job makes is its tenant's alone (umask 077, its own
    uid), and the sticky scratch keeps others from replacing it."""
    scratch = filesystems["scratch"].path
    write = f"echo 'print(\"ALICE CODE RUNS IN YOUR JOB\")' > {scratch}/sitecustomize.py && echo written"
    first = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": write}}])
    drive(loop, all_finished(first))
    assert "written" in log_of(Job.objects.get(batch=first))
    attack = (
        f"cat {scratch}/sitecustomize.py; "
        f"echo 'print(1)' > {scratch}/sitecustomize.py; "
        f"rm -f {scratch}/sitecustomize.py; "
        f"mv {scratch}/sitecustomize.py {scratch}/x; "
        f"PYTHONPATH={scratch} python3 -c 'print(\"bob ran\")'"
    )
    second = submit(bob, script_tool(), [filesystems["scratch"]], [{"args": {"script": attack}}])
    drive(loop, all_finished(second))
    log = log_of(Job.objects.get(batch=second))
    assert "ALICE CODE RUNS IN YOUR JOB" not in log, log
    assert "Permission denied" in log or "Operation not permitted" in log, log
    assert "bob ran" in log
    path = f"{scratch}/sitecustomize.py"
    assert os.path.exists(path) and "ALICE CODE" in open(path).read()  # noqa: SIM115 (read once)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)


def test_one_tenant_holding_the_inotify_instances_does_not_stop_another(pool, loop, alice, bob, filesystems):  # noqa: F811
    """Per-user kernel limits are per tenant once their accounts differ."""
    hold = (
        "import ctypes, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "held = [fd for fd in (libc.inotify_init() for _ in range(200)) if fd >= 0]\n"
        "print('held', len(held), flush=True)\n"
        "time.sleep(8)\n"
    )
    use = "import ctypes\nprint('bob inotify', ctypes.CDLL(None).inotify_init() >= 0)\n"
    holder = submit(alice, python_tool("inotify-hold", hold), [filesystems["scratch"]], [{"args": {}}])
    holder_job = Job.objects.get(batch=holder)
    drive(loop, lambda: re.search(r"held \d+\n", log_of(holder_job)) is not None, timeout=30)
    assert int(log_of(holder_job).split()[1]) >= 100, log_of(holder_job)
    user = submit(bob, python_tool("inotify-use", use), [filesystems["scratch"]], [{"args": {}}])
    drive(loop, all_finished(user), timeout=30)
    assert "bob inotify True" in log_of(Job.objects.get(batch=user)), log_of(Job.objects.get(batch=user))
    drive(loop, all_finished(holder), timeout=30)


def test_a_tenant_without_an_account_waits_saying_so(pool, loop, alice, bob, filesystems):  # noqa: F811
    carol = User.objects.create_user("carol")
    for user in (alice, bob):  # the two pool accounts are given out
        drive(loop, all_finished(submit(user, script_tool(), [filesystems["scratch"]], [{"args": {"script": "true"}}])))
    batch = submit(carol, script_tool(), [filesystems["scratch"]], [{"args": {"script": "id -u"}}])
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        loop.step()
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("PENDING", NO_ACCOUNT_REASON)
    call_command("job_accounts", "--pool", "3", stdout=open(os.devnull, "w"))  # noqa: SIM115
    drive(loop, all_finished(batch))
    job.refresh_from_db()
    assert job.status == "SUCCEEDED", job.reason
    assert uid_of(job) == User.objects.get(username="carol").job_account.uid


def test_an_account_is_never_root_the_services_or_anothers(pool, alice, bob):
    with pytest.raises(JobAccountError, match="root or the service's own user"):
        map_job_account(user=alice, username="root")
    with pytest.raises(JobAccountError, match="no unix account"):
        map_job_account(user=alice, username="no-such-account-here")
    map_job_account(user=alice, username=pool[0])
    with pytest.raises(JobAccountError, match="already runs another user's jobs"):
        map_job_account(user=bob, username=pool[0])
    with pytest.raises(CommandError, match="root or the service's own user"):
        call_command("job_accounts", "--map", "bob", "root")


def test_without_accounts_the_shared_job_user_runs_every_tenant(loop, isolation, alice, filesystems):  # noqa: F811
    """A deployment configured as before (BATCHES_JOB_USER, no accounts) keeps working."""
    if isolation.job_user is None:
        pytest.skip("BATCHES_JOB_USER is not set")
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "id -u"}}])
    drive(loop, all_finished(batch))
    assert uid_of(Job.objects.get(batch=batch)) == isolation.job_user.uid


def test_an_unsealed_worker_beside_a_deployment_that_requires_sealing_runs_nothing(alice, filesystems, anon_client, caplog):  # noqa: F811
    """A worker started without BATCHES_REQUIRE_ISOLATION ran alice's job as uid 0 while
    the web server, which had it, only said 503 on /readyz."""
    set_isolation_required(required=True, by="the web server, in this test")
    unsealed = in_process_loop()  # isolation off: it would run jobs as its own user
    try:
        assert "cannot seal them" in caplog.text
        batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "id -u"}}])
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            unsealed.step()
        assert Job.objects.get(batch=batch).status in ("SUBMITTED", "PENDING", "RUNNABLE")
        response = anon_client.get("/readyz")
        assert response.status_code == 503
        assert unsealed.worker.name in response.json()["checks"]["isolation"]
    finally:
        unsealed.stop()


def test_a_root_worker_with_no_account_to_run_jobs_under_refuses_to_start(db):
    if os.geteuid() != 0:
        pytest.skip("only a root worker could run jobs as root")
    env = worker_env(BATCHES_ISOLATION="auto", BATCHES_JOB_USER="")
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runworker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "refusing to run jobs as root" in result.stderr, result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_worker_started_without_the_setting_refuses_where_sealing_is_required():
    set_isolation_required(required=True, by="test")
    env = worker_env(BATCHES_ISOLATION="off")
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runworker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "the deployment requires sealed jobs" in result.stderr, result.stderr
    assert settings.BATCHES_LOG_DIR  # the worker's environment was the test's


def test_the_shared_job_user_is_never_one_tenants_account(pool, alice, settings):
    """Every tenant's jobs ran as BATCHES_JOB_USER before accounts: its files are everyone's."""
    settings.BATCHES_JOB_USER = pool[1]
    with pytest.raises(JobAccountError, match="is BATCHES_JOB_USER"):
        map_job_account(user=alice, username=pool[1])


def test_a_log_is_readable_by_the_log_folders_group_and_nobody_else(pool, isolation, alice, filesystems, settings, tmp_path):  # noqa: F811
    """A root worker made logs root:root 0640: a web server running as the service's
    user (the log folder's group) could not read them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    service_group = pwd.getpwnam(pool[1]).pw_gid  # any group but root's stands for the service's
    os.chown(logs, -1, service_group)
    settings.BATCHES_LOG_DIR = logs
    loop = in_process_loop(isolation=isolation)
    try:
        batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "echo hi"}}])
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    log = logs / f"{Job.objects.get(batch=batch).log_id}.log"
    assert log.read_text() == "hi\n"
    assert (log.stat().st_gid, log.stat().st_mode & 0o777) == (service_group, 0o640)


def test_a_name_another_tenant_made_first_in_a_shared_folder_takes_nothing(pool, loop, alice, bob, filesystems):  # noqa: F811
    """Alice made results.csv open to all, and out.txt a symlink to bob's own
    filesystem, before bob's job wrote them: she read his results and he overwrote his
    own file through her link. The kernel's protections for sticky shared folders
    (required: fs.protected_regular=2, protected_symlinks=1, protected_fifos=2) refuse both."""
    scratch, private = filesystems["scratch"].path, filesystems["bob"].path
    Path(private, "precious").write_text("bob's own\n")
    Path(private, "precious").chmod(0o666)
    plant = f"touch {scratch}/results.csv && chmod 666 {scratch}/results.csv && ln -s {private}/precious {scratch}/out.txt && echo planted"
    first = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": plant}}])
    drive(loop, all_finished(first))
    assert "planted" in log_of(Job.objects.get(batch=first))
    write = f"echo BOB-RESULT > {scratch}/results.csv; echo 'bob log line' > {scratch}/out.txt; echo tried"
    second = submit(bob, script_tool(), [filesystems["scratch"], filesystems["bob"]], [{"args": {"script": write}}])
    drive(loop, all_finished(second))
    assert "tried" in log_of(Job.objects.get(batch=second))
    assert Path(scratch, "results.csv").read_text() == ""
    assert Path(private, "precious").read_text() == "bob's own\n"


def test_a_mapped_account_is_a_persons_with_a_uid_of_its_own(pool, alice, bob):
    for system in ("daemon", "nobody"):
        with pytest.raises(JobAccountError, match="system account"):
            map_job_account(user=alice, username=system)
    alias = f"batches-alias-{os.getpid()}"  # its own each run: runs may overlap on one machine
    uid = pwd.getpwnam(pool[0]).pw_uid
    subprocess.run(["useradd", "--non-unique", "--uid", str(uid), "--no-create-home", alias], check=True)  # noqa: S603, S607
    try:
        map_job_account(user=alice, username=pool[0])
        with pytest.raises(JobAccountError, match="which is job account .* too"):
            map_job_account(user=bob, username=alias)
    finally:
        subprocess.run(["userdel", alias], check=False, capture_output=True)  # noqa: S603, S607


def test_an_unmapped_account_goes_back_to_its_user_alone(pool, alice, bob):
    from accounts.job_accounts import unmap_job_account

    map_job_account(user=alice, username=pool[0])
    assert unmap_job_account(user=alice)
    with pytest.raises(JobAccountError, match="was another user's"):
        map_job_account(user=bob, username=pool[0])
    assert map_job_account(user=alice, username=pool[0]).user == alice


def test_a_name_that_means_another_uid_here_does_not_run(isolation):  # noqa: F811
    """Accounts must match everywhere: a worker or node where the name is another uid
    (the service's, another tenant's) refuses rather than run the job as that uid."""
    from jobs.executors.isolation import NoJobAccount, job_account

    real = pwd.getpwnam("batches-job").pw_uid if isolation.job_user else os.getuid()
    with pytest.raises(NoJobAccount, match="not .* as recorded"):
        job_account("batches-job", uid=real + 1)


def test_an_account_whose_group_is_the_services_is_refused(pool, alice, settings, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, -1, pwd.getpwnam(pool[1]).pw_gid)  # the service's group stands as pool[1]'s
    settings.DATA_DIR = data
    with pytest.raises(JobAccountError, match="group .* is the service's"):
        map_job_account(user=alice, username=pool[1])


def test_an_operator_maps_an_account_in_the_admin_with_the_same_rules(pool, admin_client, alice, bob):
    """The admin's Job accounts page goes through map_job_account: root is refused on the
    form, naming the field; a pool account maps; the list shows who runs as what."""
    assert admin_client.get("/admin/accounts/jobaccount/").status_code == 200
    refused = admin_client.post("/admin/accounts/jobaccount/add/", {"username": "root", "user": alice.pk})
    assert refused.status_code == 200
    assert "root or the service&#x27;s own user" in refused.content.decode()
    account = JobAccount.objects.get(username=pool[0])
    changed = admin_client.post(f"/admin/accounts/jobaccount/{account.pk}/change/", {"username": pool[0], "user": bob.pk})
    assert changed.status_code == 302, changed.content.decode()[:2000]
    account.refresh_from_db()
    assert account.user == bob and account.assigned_at is not None
    listing = admin_client.get("/admin/accounts/jobaccount/").content.decode()
    assert pool[0] in listing and "bob" in listing
