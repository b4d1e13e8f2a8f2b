"""Sealed jobs (issue 7), through real jobs: the job user, the bubblewrap sandbox, one
cgroup memory and pids limit per attempt, the log cap. Each test is what a hostile
tenant tried. Without root, bubblewrap or cgroups these skip with the reason; with
BATCHES_REQUIRE_ISOLATION=1 (CI) they fail instead, so CI proves every promise."""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from batches.models import Batch, Filesystem, Tool
from jobs.executors.isolation import Isolation, probe
from jobs.models import Job, Worker
from jobs.submission import submit_batch
from tests.worker_helpers import ROOT, all_finished, drive, in_process_loop, python_tool, script_tool, statuses, wait_for, worker_env

pytestmark = pytest.mark.django_db


def sealed_isolation() -> Isolation:
    isolation = probe(job_user=settings.BATCHES_JOB_USER)
    if isolation.missing:
        message = f"job isolation is not complete here: {isolation.describe()}"
        if settings.BATCHES_REQUIRE_ISOLATION:
            pytest.fail(message)
        pytest.skip(message)
    return isolation


@pytest.fixture
def isolation() -> Isolation:
    return sealed_isolation()


@pytest.fixture
def loop(isolation):
    loop = in_process_loop(isolation=isolation, grace=0.5)
    yield loop
    loop.stop()


@pytest.fixture
def filesystems(db, alice, bob):
    """Filesystems in a folder every user may traverse (as real mounts are): a public
    scratch, a read-only reference, and one private to each of alice and bob."""
    base = Path(tempfile.mkdtemp(prefix="batches-sealed-"))
    base.chmod(0o755)
    made = {}
    for name, mode, read_only in (("scratch", 0o1777, False), ("reference", 0o755, True), ("alice", 0o777, False), ("bob", 0o777, False)):
        path = base / name
        path.mkdir()
        path.chmod(mode)
        made[name] = Filesystem.objects.create(
            name=f"sealed-{name}", path=str(path), read_only=read_only, public=name in ("scratch", "reference")
        )
    made["alice"].users.add(alice)
    made["bob"].users.add(bob)
    return made


def submit(user: User, tool: Tool, filesystems: list[Filesystem], jobs: list[dict], **options) -> Batch:
    return submit_batch(
        user=user,
        tool_id=tool.pk,
        cpu=options.pop("cpu", 1),
        memory=options.pop("memory", 256),
        filesystem_ids=[fs.pk for fs in filesystems],
        jobs=jobs,
        **options,
    )


def log_of(job: Job) -> str:
    path = settings.BATCHES_LOG_DIR / f"{job.log_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def processes_matching(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_memory_limit_holds_for_all_processes_of_the_job(loop, alice, filesystems):
    # D1: ten children of 200 MiB each under a 256 MiB limit.
    code = (
        "import subprocess, sys\n"
        "child = 'x = bytearray(200 * 1024 * 1024); import time; time.sleep(3)'\n"
        "procs = [subprocess.Popen([sys.executable, '-c', child]) for _ in range(10)]\n"
        "print([p.wait() for p in procs])"
    )
    hog = python_tool("forkhog", code)
    batch = submit(alice, hog, [filesystems["scratch"]], [{"args": {}}], memory=256)
    drive(loop, all_finished(batch), timeout=30)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "killed: out of memory (limit 256 MiB)"), log_of(job)
    # The worker lives on.
    after = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "echo fine"}}])
    drive(loop, all_finished(after))
    assert statuses(after) == ["SUCCEEDED"]


def test_daemons_die_with_the_job(loop, alice, filesystems):
    # D2: a setsid daemon and a double-forked one with a clean environment.
    script = "setsid sleep 1001 & setsid sh -c 'env -i sleep 1002 &' ; sleep 0.3; echo parent done"
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": script}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", (job.reason, log_of(job))
    deadline = time.monotonic() + 3
    while processes_matching("sleep 1001") or processes_matching("sleep 1002"):
        assert time.monotonic() < deadline, "a daemon outlived its job"
        time.sleep(0.05)


def test_a_job_reads_nothing_that_is_not_its_own(loop, isolation, alice, bob, filesystems, tmp_path):
    secret = Path(filesystems["scratch"].path) / "worker-only"
    secret.write_text("worker secret")
    secret.chmod(0o600)  # owned by the worker's user (root)
    alice_private = Path(filesystems["alice"].path) / "diary"
    alice_private.write_text("alice's")
    # Another job's log (bob's), the service's data and log folders, the database.
    other = submit(bob, script_tool(), [filesystems["bob"]], [{"args": {"script": "echo bob's log"}}])
    drive(loop, all_finished(other))
    other_log = settings.BATCHES_LOG_DIR / f"{Job.objects.get(batch=other).log_id}.log"
    targets = {
        "worker file 0600": secret,
        "other tenant's filesystem": alice_private,
        "another job's log": other_log,
        "the log folder": settings.BATCHES_LOG_DIR,
        "the data folder": settings.DATA_DIR,
        "the project": ROOT / "batchsite" / "settings.py",
    }
    # A file counts as read if cat can read it; a folder if ls can list it.
    reads = {name: ("ls" if Path(path).is_dir() else "cat") for name, path in targets.items()}
    script = "; ".join(f"if {reads[name]} {path} >/dev/null 2>&1; then echo 'READ {name}'; fi" for name, path in targets.items())
    script += "; echo uid=$(id -u)"
    batch = submit(bob, script_tool(), [filesystems["scratch"], filesystems["bob"]], [{"args": {"script": script}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    log = log_of(job)
    assert job.status == "SUCCEEDED", (job.reason, log)
    assert "READ" not in log, log
    assert f"uid={isolation.job_user.uid}\n" in log


def test_a_read_only_filesystem_is_read_only(loop, alice, filesystems):
    target = Path(filesystems["reference"].path) / "written"
    batch = submit(alice, script_tool(), [filesystems["reference"]], [{"args": {"script": f"echo x > {target}"}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "FAILED"
    assert "Read-only file system" in log_of(job)
    assert not target.exists()


def test_a_retargeted_symlink_reads_nothing(loop, alice, bob, filesystems):
    # D3: bob's path argument is checked at submission, then the link is retargeted.
    diary = Path(filesystems["alice"].path) / "diary"
    diary.write_text("alice's secret\n")
    own = Path(filesystems["bob"].path) / "notes"
    own.write_text("bob's notes\n")
    link = Path(filesystems["bob"].path) / "link"
    link.symlink_to(own)
    cat = Tool.objects.create(name="cat", command=["/bin/cat", "{file}"], parameters={"file": {"type": "path", "required": True}})
    batch = submit(bob, cat, [filesystems["bob"]], [{"args": {"file": str(link)}}])
    link.unlink()
    link.symlink_to(diary)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "FAILED"
    assert "alice's secret" not in log_of(job)
    assert "No such file or directory" in log_of(job)


def test_processes_stop_at_the_pids_limit(loop, alice, filesystems):
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 2000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('stopped at', n, exc.strerror, flush=True)\n"
    )
    forker = python_tool("forker", code)
    batch = submit(alice, forker, [filesystems["scratch"]], [{"args": {}}], timeout_seconds=30)
    drive(loop, all_finished(batch), timeout=40)
    job = Job.objects.get(batch=batch)
    log = log_of(job)
    assert "stopped at" in log, log
    stopped_at = int(log.split("stopped at ")[1].split()[0])
    assert stopped_at < settings.BATCHES_JOB_MAX_PROCESSES, log
    # The forked children (same command line as their parent) went with the job.
    deadline = time.monotonic() + 3
    while processes_matching("os._exit(0)"):
        assert time.monotonic() < deadline, "the job's processes outlived it"
        time.sleep(0.05)


def test_hostile_values_reach_the_program_literally_inside_the_sandbox(loop, alice, filesystems):
    canary = Path(filesystems["scratch"].path) / "canary"
    values = [f"; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", "-rf", "* ? [a-z] ~ $HOME", "ünïcödé ✓"]
    argv_dump = python_tool(
        "argv_dump_sealed",
        "import json, sys\nsys.stdout.write(json.dumps(sys.argv[1:]))",
        parameters={"value": {"type": "string", "required": True}},
        extra=["{value}"],
    )
    batch = submit(alice, argv_dump, [filesystems["scratch"]], [{"args": {"value": v}} for v in values])
    drive(loop, all_finished(batch))
    for job in Job.objects.filter(batch=batch).order_by("index"):
        assert job.status == "SUCCEEDED", job.reason
        assert json.loads(log_of(job)) == [values[job.index]]
    assert not canary.exists()


def test_a_program_outside_the_sandbox_fails_with_a_reason(loop, alice, filesystems, tmp_path):
    program = ROOT / "manage.py"  # exists on the host, not inside the sandbox
    tool = Tool.objects.create(name="hidden", command=[str(program)], parameters={})
    batch = submit(alice, tool, [filesystems["scratch"]], [{"args": {}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "FAILED"
    assert job.reason.startswith(f"could not start {program}: not inside the sandbox"), job.reason


def test_the_log_is_cut_at_the_cap(alice, filesystems):
    """Needs no isolation part: the worker enforces the cap on any machine."""
    loop = in_process_loop()
    loop.executor.log_max_bytes = 1024 * 1024
    try:
        # D4: a writer of 1 GiB.
        batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "head -c 1073741824 /dev/zero"}}])
        drive(loop, all_finished(batch), timeout=30)
    finally:
        loop.stop()
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "log over 1 MiB")
    log = (settings.BATCHES_LOG_DIR / f"{job.log_id}.log").read_bytes()
    assert log.endswith(b"\n--- log cut at 1 MiB: the attempt was stopped ---\n")
    assert len(log) <= 1024 * 1024 + 100


def test_workers_say_which_parts_are_in_force(loop, anon_client):
    body = anon_client.get("/readyz").json()
    assert body["isolation"] == {"job_user": True, "sandbox": True, "cgroup_memory": True, "cgroup_pids": True, "cgroup_cpu": True}
    assert loop.worker.isolation == body["isolation"]


def test_a_worker_that_cannot_seal_jobs_refuses_to_start_when_isolation_is_required(db):
    env = worker_env(BATCHES_ISOLATION="off", BATCHES_REQUIRE_ISOLATION="1")
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runworker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "BATCHES_REQUIRE_ISOLATION is set and this machine cannot seal jobs" in result.stderr
    assert "sandbox: BATCHES_ISOLATION is off" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_without_isolation_the_worker_says_what_is_missing():
    """The worker starts, says what is missing, registers and stops cleanly on SIGTERM.
    A transactional test: the test holds no open transaction (on SQLite, the write lock
    that a worker registering itself would wait 30 s on)."""
    env = worker_env(BATCHES_ISOLATION="off")
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: worker.poll() is not None or Worker.objects.filter(pid=worker.pid, state="ACTIVE").exists(), timeout=60)
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "job isolation: job_user: NO (BATCHES_ISOLATION is off)" in err
    assert list(Worker.objects.filter(pid=worker.pid).values_list("state", flat=True)) == ["STOPPED"]


def test_reserving_address_space_is_not_using_memory(loop, alice, filesystems):
    """With the cgroup limit in force there is no address-space limit: runtimes that
    reserve more than they use (the JVM, Go) start under a small memory limit."""
    code = "import mmap\nm = mmap.mmap(-1, 4 << 30)  # 4 GiB of address space, never touched\nprint('reserved')"
    reserve = python_tool("reserve", code)
    batch = submit(alice, reserve, [filesystems["scratch"]], [{"args": {}}], memory=128)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, log_of(job)) == ("SUCCEEDED", "reserved\n"), job.reason


def test_a_sandboxed_job_cannot_reach_the_database_or_other_services(loop, alice, filesystems):
    """The service's PostgreSQL (trust auth on loopback here), Redis and the rest listen
    on the machine's loopback; a job has a loopback of its own."""
    code = (
        "import socket\n"
        "for port in (5432, 6379, 8000):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
        "        print('REACHED', port)\n"
        "    except OSError as exc:\n"
        "        print('refused', port)\n"
    )
    probe_tool = python_tool("netprobe", code)
    batch = submit(alice, probe_tool, [filesystems["scratch"]], [{"args": {}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    assert "REACHED" not in log_of(job), log_of(job)


def test_no_attempt_cgroup_is_left_behind(isolation, alice, filesystems):
    loop = in_process_loop(isolation=isolation)
    try:
        batch = submit(
            alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "sleep 30 & sleep 30 & echo x"}} for _ in range(3)]
        )
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    names = {f"{job.pk}.1" for job in Job.objects.filter(batch=batch)}
    cgroups = isolation.cgroups
    left = [path.name for base in (cgroups.memory, cgroups.pids) for path in base.iterdir() if path.name in names]
    assert left == []


def test_the_working_directory_is_bounded_by_the_memory_limit(loop, alice, filesystems):
    """The sandboxed working directory lives in memory: a job cannot fill the disk with
    it (it found 8 GiB free to take), and what it writes counts against its memory."""
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "head -c 300000000 /dev/zero > big"}}], memory=64)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "FAILED"
    assert job.reason == "killed: out of memory (limit 64 MiB)" or "No space left on device" in log_of(job), (job.reason, log_of(job))


def test_no_user_namespaces_inside_the_sandbox(loop, alice, bob, filesystems):
    """Every tenant runs as the job user and the kernel counts user namespaces per user:
    a job holding them all stopped every other job's sandbox from starting."""
    batch = submit(alice, script_tool(), [filesystems["scratch"]], [{"args": {"script": "unshare -U true && echo NESTED"}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert "NESTED" not in log_of(job), log_of(job)
