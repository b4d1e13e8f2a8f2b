"""The local executor with real processes, driven by an in-process worker loop step by
step (no mocks): what runs, how it ends, and why."""

import json
import os
from pathlib import Path

import pytest

from batches.models import Batch
from jobs.models import Job, JobEvent
from jobs.removal import delete_batches
from jobs.services import cancel_jobs, retry_failed_jobs
from tests.worker_helpers import (
    all_finished,
    drive,
    in_process_loop,
    make_batch,
    pid_alive,
    python_tool,
    script_tool,
    statuses,
    wait_for,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def loop():
    loop = in_process_loop()
    yield loop
    loop.stop()


def scratch(catalog) -> Path:
    path = Path(catalog["filesystems"]["scratch"].path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def transitions(job: Job) -> list[tuple[str, str]]:
    """The job's status changes, in the order they were recorded."""
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("from_status", "to_status"))


def log_text(client, job: Job) -> str:
    response = client.get(f"/logs/{job.log_id}")
    assert response.status_code == 200
    return response.content.decode()


def test_echo_runs_through_every_state(loop, alice, alice_client, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "hello"}}, {"args": {"message": "world"}}])
    drive(loop, all_finished(batch))
    assert statuses(batch) == ["SUCCEEDED", "SUCCEEDED"]
    first, second = Job.objects.filter(batch=batch).order_by("index")
    assert log_text(alice_client, first) == "hello\n"
    assert log_text(alice_client, second) == "world\n"
    assert first.exit_code == 0 and first.attempts == 1
    assert first.start_time is not None and first.stop_time >= first.start_time
    path = [(e.from_status, e.to_status) for e in JobEvent.objects.filter(job=first).order_by("id")]
    assert path == [("SUBMITTED", "RUNNABLE"), ("RUNNABLE", "STARTING"), ("STARTING", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    events = alice_client.get(f"/batches/{batch.pk}/jobs/{first.pk}/events").json()
    assert [e["to_status"] for e in events][-1] == "SUCCEEDED"
    assert alice_client.get(f"/batches/{batch.pk}").json()["succeeded"] == 2


def test_environment_working_dir_and_filesystems(loop, alice, alice_client, catalog, settings):
    script = 'pwd; echo "fs=$BATCH_FS_SCRATCH"; echo "home=$HOME"; echo "attempt=$BATCH_ATTEMPT"; env | grep -c SECRET_KEY || true'
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    lines = log_text(alice_client, job).splitlines()
    workdir = str(settings.BATCHES_WORK_DIR / f"{job.pk}.1")  # one directory per attempt
    assert lines == [workdir, f"fs={catalog['filesystems']['scratch'].path}", f"home={workdir}", "attempt=1", "0"]
    wait_for(lambda: not os.path.exists(workdir), timeout=5, message="the working directory is removed after the attempt")


def test_sleep_job_is_running_while_it_sleeps_and_logs_are_live(loop, alice, alice_client, catalog):
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "echo start; sleep 1; echo end"}}])
    job = Job.objects.get(batch=batch)
    drive(loop, lambda: Job.objects.get(pk=job.pk).status == "RUNNING")
    drive(loop, lambda: log_text(alice_client, job) == "start\n", timeout=5)
    assert Job.objects.get(pk=job.pk).status == "RUNNING"
    tail = alice_client.get(f"/logs/{job.log_id}?offset=3").content
    assert tail == b"rt\n"
    drive(loop, all_finished(batch))
    assert log_text(alice_client, job) == "start\nend\n"
    assert Job.objects.get(pk=job.pk).status == "SUCCEEDED"


def test_catalog_sleep_tool(loop, alice, catalog):
    batch = make_batch(alice, catalog["tools"]["sleep"], catalog, [{"args": {"seconds": 0.2}}])
    drive(loop, all_finished(batch))
    assert statuses(batch) == ["SUCCEEDED"]


def test_exit_code_3(loop, alice, alice_client, catalog):
    batch = make_batch(alice, catalog["tools"]["fail"], catalog, [{"args": {"code": 3}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason, job.exit_code) == ("FAILED", "exit code 3", 3)
    assert "failing with exit code 3" in log_text(alice_client, job)
    detail = alice_client.get(f"/batches/{batch.pk}/jobs/{job.pk}").json()
    assert detail["reason"] == "exit code 3"


def test_killed_by_signal(loop, alice, catalog):
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "kill -9 $$"}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "killed by signal 9 (SIGKILL)")


def test_memory_over_the_limit_fails_and_the_worker_lives_on(loop, alice, alice_client, catalog):
    code = (
        "import time\nchunks = []\nfor _ in range(64):\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
        "print('all allocated', flush=True)\ntime.sleep(60)"
    )
    hog = python_tool("hog", code)
    batch = make_batch(alice, hog, catalog, [{"args": {}}], memory=128)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "FAILED"
    assert "out of memory (limit 128 MiB)" in job.reason
    # The allocation failed at the limit: the program never got past it to its sleep.
    assert "all allocated" not in log_text(alice_client, job)
    assert transitions(job)[-2:] == [("STARTING", "RUNNING"), ("RUNNING", "FAILED")]
    # The worker goes on running jobs.
    after = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "still here"}}])
    drive(loop, all_finished(after))
    assert statuses(after) == ["SUCCEEDED"]


def test_memory_within_the_limit_succeeds(loop, alice, catalog):
    fits = python_tool("fits", "x = bytearray(32 * 1024 * 1024)\nprint(len(x))")
    batch = make_batch(alice, fits, catalog, [{"args": {}}], memory=256)
    drive(loop, all_finished(batch))
    assert statuses(batch) == ["SUCCEEDED"], Job.objects.get(batch=batch).reason


def test_timeout(loop, alice, catalog):
    batch = make_batch(alice, catalog["tools"]["sleep"], catalog, [{"args": {"seconds": 30}}], timeout_seconds=1)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "timed out after 1 s")
    # Ended by the timeout while it ran (not when the 30 s sleep would have ended): one
    # attempt, RUNNING then FAILED with the timeout's reason.
    assert transitions(job)[-2:] == [("STARTING", "RUNNING"), ("RUNNING", "FAILED")]
    assert job.events.order_by("id").last().reason == "timed out after 1 s"
    assert job.attempt_records.count() == 1


def test_tool_timeout_is_the_default_and_batch_overrides_it(alice, catalog):
    tool = script_tool("slow", timeout_seconds=7)
    assert make_batch(alice, tool, catalog, [{"args": {"script": "true"}}]).timeout_seconds == 7
    assert make_batch(alice, tool, catalog, [{"args": {"script": "true"}}], timeout_seconds=3).timeout_seconds == 3


def test_grandchild_ignoring_sigterm_is_killed_when_the_job_ends(loop, alice, catalog):
    pidfile = scratch(catalog) / "grandchild.pid"
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 60' & sleep 0.3; echo parent done"
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}])
    drive(loop, lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    grandchild = int(pidfile.read_text())
    assert pid_alive(grandchild)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    wait_for(lambda: not pid_alive(grandchild), timeout=2, message="the grandchild outlived its job")


def test_timeout_kills_a_tree_that_ignores_sigterm(loop, alice, catalog):
    pidfile = scratch(catalog) / "stubborn.pid"
    script = f"trap '' TERM; sh -c 'echo $$ > {pidfile}; exec sleep 60' & wait"
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}], timeout_seconds=1)
    drive(loop, all_finished(batch), timeout=10)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason) == ("FAILED", "timed out after 1 s")
    assert not pid_alive(int(pidfile.read_text()))


def test_cancel_queued_job_never_starts(loop, alice, alice_client, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "never"}}])
    loop.executor._capacity = type(loop.executor.capacity())(0, 0)  # no room: it stays queued
    drive(loop, lambda: statuses(batch) == ["RUNNABLE"])
    assert alice_client.post(f"/batches/{batch.pk}/cancel").json() == {"changed": 1, "stopping": 0}
    loop.executor._capacity = type(loop.executor.capacity())(2, 4096)
    for _ in range(10):
        loop.step()
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason, job.attempts) == ("FAILED", "Cancelled by user", 0)
    assert not JobEvent.objects.filter(job=job, to_status="STARTING").exists()
    assert alice_client.get(f"/logs/{job.log_id}").content == b""


def test_cancel_running_job_stops_its_process(loop, alice, alice_client, catalog):
    pidfile = scratch(catalog) / "running.pid"
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": f"echo $$ > {pidfile}; exec sleep 60"}}])
    job = Job.objects.get(batch=batch)
    drive(loop, lambda: Job.objects.get(pk=job.pk).status == "RUNNING" and pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    response = alice_client.post(f"/batches/{batch.pk}/jobs/{job.pk}/cancel")
    assert response.json() == {"changed": 1, "stopping": 1}
    drive(loop, lambda: not loop.executor.active(), timeout=5)
    assert not pid_alive(pid)
    job.refresh_from_db()
    assert (job.status, job.reason) == ("FAILED", "Cancelled by user")


def test_delete_batch_stops_its_running_jobs(loop, alice, catalog):
    pidfile = scratch(catalog) / "deleted.pid"
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": f"echo $$ > {pidfile}; exec sleep 60"}}])
    drive(loop, lambda: statuses(batch) == ["RUNNING"] and pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    delete_batches(batches=Batch.objects.filter(pk=batch.pk))
    drive(loop, lambda: not loop.executor.active(), timeout=5)
    assert not pid_alive(pid)


def test_failed_attempts_are_retried_up_to_max_attempts(loop, alice, alice_client, catalog):
    batch = make_batch(alice, catalog["tools"]["fail"], catalog, [{"args": {"code": 2}}], max_attempts=3)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason, job.attempts) == ("FAILED", "exit code 2", 3)
    retries = JobEvent.objects.filter(job=job, from_status="RUNNING", to_status="RUNNABLE").order_by("id")
    assert [e.reason for e in retries] == [
        "Attempt 1 failed (exit code 2); waiting to retry",
        "Attempt 2 failed (exit code 2); waiting to retry",
    ]
    assert "--- attempt 3 ---" in log_text(alice_client, job)
    # The user's retry runs only the FAILED jobs, with a fresh max_attempts.
    assert alice_client.post(f"/batches/{batch.pk}/retry").json() == {"changed": 1}
    drive(loop, all_finished(batch))
    job.refresh_from_db()
    assert (job.status, job.attempts, job.charged_attempts) == ("FAILED", 6, 3)
    rows = list(job.attempt_records.order_by("number").values_list("number", "state", "exit_code", "reason", "charged"))
    assert rows == [(n, "ENDED", 2, "exit code 2", True) for n in range(1, 7)]


def test_a_retried_attempt_can_succeed(loop, alice, catalog):
    marker = scratch(catalog) / "flaky"
    script = f'if [ "$BATCH_ATTEMPT" -lt 2 ]; then exit 1; fi; echo ok > {marker}'
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}], max_attempts=2)
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts) == ("SUCCEEDED", 2)
    assert marker.read_text() == "ok\n"


def test_missing_program_fails_with_a_reason(loop, alice, catalog):
    from batches.models import Tool

    tool = Tool.objects.create(name="missing", command=["/nonexistent/program"], parameters={})
    batch = make_batch(alice, tool, catalog, [{"args": {}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "FAILED"
    assert job.reason == "could not start /nonexistent/program: No such file or directory"


def test_shell_metacharacters_reach_the_program_byte_for_byte(loop, alice, alice_client, catalog, tmp_path):
    canary = tmp_path / "canary"
    values = [
        f"; rm -rf ~; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"line one\nline two && touch {canary}",
        "-rf",
        "--help",
        "* ? [a-z] ~ $HOME ${PATH} \\ ' \" | > < & #",
        "  spaces  kept  ",
        "ünïcödé ✓",
    ]
    argv_dump = python_tool(
        "argv_dump",
        "import json, sys\nsys.stdout.write(json.dumps(sys.argv[1:]))",
        parameters={"value": {"type": "string", "required": True}},
        extra=["{value}", "prefix-{value}-suffix"],
    )
    batch = make_batch(alice, argv_dump, catalog, [{"args": {"value": value}} for value in values])
    drive(loop, all_finished(batch))
    for job in Job.objects.filter(batch=batch).order_by("index"):
        assert job.status == "SUCCEEDED", job.reason
        value = values[job.index]
        assert json.loads(log_text(alice_client, job)) == [value, f"prefix-{value}-suffix"]
    # And through echo, whose first argument is the message: a leading dash is data.
    echo_batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": f"$(touch {canary}) `id` ; ls"}}])
    drive(loop, all_finished(echo_batch))
    assert log_text(alice_client, Job.objects.get(batch=echo_batch)) == f"$(touch {canary}) `id` ; ls\n"
    assert not canary.exists()


def test_jobs_wait_for_free_capacity(loop, alice, catalog):
    batch = make_batch(alice, catalog["tools"]["sleep"], catalog, [{"args": {"seconds": 0.5}} for _ in range(4)], cpu=1)
    drive(loop, lambda: statuses(batch).count("RUNNING") == 2)
    assert statuses(batch).count("RUNNABLE") == 2
    waiting = Job.objects.filter(batch=batch, status="RUNNABLE").first()
    assert waiting.reason == "Waiting for a worker with 1 free cpu and 256 MiB"
    drive(loop, all_finished(batch))
    assert statuses(batch) == ["SUCCEEDED"] * 4


def test_memory_is_capacity_too(alice, catalog):
    loop = in_process_loop(cpus=4, memory_mib=600)
    try:
        batch = make_batch(alice, catalog["tools"]["sleep"], catalog, [{"args": {"seconds": 0.5}} for _ in range(3)], memory=256)
        drive(loop, lambda: statuses(batch).count("RUNNING") == 2)
        assert statuses(batch).count("RUNNABLE") == 1
        drive(loop, all_finished(batch))
    finally:
        loop.stop()


def test_job_larger_than_any_worker_is_pending_with_a_reason(alice, catalog):
    loop = in_process_loop(cpus=1, memory_mib=512)
    try:
        batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "big"}}], memory=1024)
        drive(loop, lambda: statuses(batch) == ["PENDING"])
        reason = Job.objects.get(batch=batch).reason
        assert reason == "No worker can run it: needs 1 cpu and 1024 MiB; the largest live worker has 1 cpu and 512 MiB"
    finally:
        loop.stop()
    bigger = in_process_loop(cpus=1, memory_mib=2048)
    try:
        drive(bigger, all_finished(batch))
        assert statuses(batch) == ["SUCCEEDED"]
    finally:
        bigger.stop()


def test_cpu_affinity(alice, alice_client, catalog):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    loop = in_process_loop(cpus=2)
    try:
        batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "grep Cpus_allowed_list /proc/self/status"}}], cpu=1)
        drive(loop, all_finished(batch))
        line = log_text(alice_client, Job.objects.get(batch=batch)).split()
        assert line[0] == "Cpus_allowed_list:" and "," not in line[1] and "-" not in line[1]
    finally:
        loop.stop()


def test_stopping_the_worker_requeues_running_attempts(alice, catalog):
    loop = in_process_loop()
    batch = make_batch(alice, catalog["tools"]["sleep"], catalog, [{"args": {"seconds": 30}}])
    drive(loop, lambda: statuses(batch) == ["RUNNING"])
    loop.stop()
    job = Job.objects.get(batch=batch)
    assert job.status == "RUNNABLE"
    assert job.charged_attempts == 0, "a stop is not the job's fault: the attempt is given back"
    assert job.reason.startswith("Attempt 1 stopped (worker ") and job.reason.endswith(
        " stopped); requeued, using no attempt (not the job's doing; requeue 1 of 5)"
    )
    attempt = job.attempt_records.get()
    assert (attempt.state, attempt.charged) == ("ENDED", False)


def test_cancel_service_is_idempotent_on_finished_jobs(loop, alice, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "x"}}])
    drive(loop, all_finished(batch))
    assert cancel_jobs(jobs=Job.objects.filter(batch=batch)).changed == 0
    assert retry_failed_jobs(jobs=Job.objects.filter(batch=batch)) == 0


def test_a_deep_tree_in_the_working_directory_is_removed(loop, alice, catalog, settings):
    """A tree 1,500 folders deep made shutil.rmtree raise RecursionError, which killed
    the thread that removes working directories."""
    code = "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nopen('f', 'w').write('x')"
    deep = python_tool("deep", code)
    batch = make_batch(alice, deep, catalog, [{"args": {}}])
    drive(loop, all_finished(batch))
    job = Job.objects.get(batch=batch)
    assert job.status == "SUCCEEDED", job.reason
    workdir = settings.BATCHES_WORK_DIR / f"{job.pk}.1"
    wait_for(lambda: not workdir.exists(), timeout=10, message="the deep working directory was not removed")
    later = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "after"}}])
    drive(loop, all_finished(later))
    later_dir = settings.BATCHES_WORK_DIR / f"{Job.objects.get(batch=later).pk}.1"
    wait_for(lambda: not later_dir.exists(), timeout=5, message="the remover stopped working")
