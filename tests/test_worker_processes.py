"""`manage.py runworker` as real processes sharing the test database: the API and a
worker side by side, a worker killed with SIGKILL and recovered, several workers racing
for the same jobs."""

import os
import re
import signal
import time
from pathlib import Path

import pytest
from django.db import connection

from jobs.models import Job, JobEvent, Worker
from tests.conftest import submission
from tests.worker_helpers import (
    all_finished,
    hand_over,
    held_jobs_script,
    make_batch,
    pid_alive,
    script_tool,
    start_worker,
    statuses,
    stop_worker_process,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_api_and_worker_side_by_side(alice_client, catalog):
    worker = start_worker()
    try:
        batch_ids = []
        for round_ in range(5):
            body = submission(catalog, jobs=[{"args": {"message": f"job {round_}.{i}"}} for i in range(20)])
            response = alice_client.post("/batches", body, format="json")
            assert response.status_code == 201, response.content
            batch_ids.append(response.json()["batch_id"])
            for batch_id in batch_ids:
                assert alice_client.get(f"/batches/{batch_id}").status_code == 200
                assert alice_client.get(f"/batches/{batch_id}/jobs").status_code == 200

        def done() -> bool:
            counts = [alice_client.get(f"/batches/{batch_id}").json() for batch_id in batch_ids]
            return all(c["succeeded"] == 20 for c in counts)

        wait_for(done, timeout=60, interval=0.2, message="the batches did not finish")
        jobs = alice_client.get(f"/batches/{batch_ids[0]}/jobs").json()
        detail = alice_client.get(f"/batches/{batch_ids[0]}/jobs/{jobs[3]['job_id']}").json()
        assert detail["status"] == "SUCCEEDED" and detail["start_time"] and detail["stop_time"]
        assert alice_client.get(f"/logs/{detail['log_id']}").content == b"job 0.3\n"
    finally:
        stderr = stop_worker_process(worker)
    assert "database is locked" not in stderr
    assert "Traceback" not in stderr, stderr


def _sleeper(alice, catalog, pidfile: Path, *, max_attempts: int):
    # The first attempt records its pid and sleeps; later attempts finish at once.
    script = f'if [ "$BATCH_ATTEMPT" = 1 ]; then echo $$ > {pidfile}; exec sleep 60; fi; echo "attempt $BATCH_ATTEMPT"'
    return make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}], max_attempts=max_attempts)


def _wait_running(batch, pidfile: Path) -> int:
    wait_for(lambda: statuses(batch) == ["RUNNING"] and pidfile.exists() and pidfile.read_text().strip(), timeout=30)
    return int(pidfile.read_text())


def test_sigkilled_worker_loses_no_job(alice, catalog, tmp_path):
    pidfile = tmp_path / "first.pid"
    batch = _sleeper(alice, catalog, pidfile, max_attempts=2)
    first = start_worker()
    try:
        job_pid = _wait_running(batch, pidfile)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        # The worker's guard kills its jobs at once: no second live attempt can appear.
        wait_for(lambda: not pid_alive(job_pid), timeout=5, message="the dead worker's job kept running")
        assert statuses(batch) == ["RUNNING"], "nothing changes before the lease runs out"
        second = start_worker()
        try:
            wait_for(all_finished(batch), timeout=30)
        finally:
            stop_worker_process(second)
    finally:
        stop_worker_process(first)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts, job.charged_attempts, job.requeues) == ("SUCCEEDED", 2, 0, 1)
    retry = JobEvent.objects.get(job=job, to_status="RUNNABLE", from_status="RUNNING")
    assert retry.reason == "Attempt 1 stopped (worker lost); requeued, using no attempt (not the job's doing; requeue 1 of 5)"
    assert Worker.objects.filter(state="LOST").count() == 1
    starts = JobEvent.objects.filter(job=job, to_status="STARTING").values_list("attempt", flat=True)
    assert list(starts) == [1, 2]


def test_sigkilled_worker_is_not_the_jobs_fault_even_on_its_only_attempt(alice, catalog, tmp_path):
    """A lost worker used to use up the attempt: with the default of one attempt, the
    job ended FAILED `worker lost`. It is requeued without using one (issue 20)."""
    pidfile = tmp_path / "only.pid"
    batch = _sleeper(alice, catalog, pidfile, max_attempts=1)
    first = start_worker()
    try:
        _wait_running(batch, pidfile)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = start_worker()
        try:
            wait_for(all_finished(batch), timeout=30)
        finally:
            stop_worker_process(second)
    finally:
        stop_worker_process(first)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts, job.charged_attempts, job.requeues) == ("SUCCEEDED", 2, 0, 1)
    first_attempt = job.attempt_records.get(number=1)
    assert (first_attempt.reason_code, first_attempt.charged) == ("worker_lost", False)


def test_restarted_worker_kills_what_a_dead_one_left_running(alice, catalog, tmp_path):
    pidfile = tmp_path / "orphan.pid"
    batch = _sleeper(alice, catalog, pidfile, max_attempts=2)
    first = start_worker()
    try:
        job_pid = _wait_running(batch, pidfile)
        # Kill the worker and its guard together: the job is orphaned, still running.
        guards = [pid for pid in children_of(first.pid) if pid != job_pid and not _is_job(pid)]
        assert guards, "the worker forks a guard"
        for pid in [first.pid, *guards]:
            os.kill(pid, signal.SIGKILL)
        first.wait()
        time.sleep(0.3)
        assert pid_alive(job_pid), "with its guard gone too, the job survives its worker"
        second = start_worker()
        try:
            wait_for(lambda: not pid_alive(job_pid), timeout=10, message="the restarted worker did not kill the orphan")
            wait_for(all_finished(batch), timeout=30)
        finally:
            stop_worker_process(second)
    finally:
        stop_worker_process(first)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts) == ("SUCCEEDED", 2)


def _is_job(pid: int) -> bool:
    try:
        return b"BATCH_JOB_ID=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_sigterm_requeues_running_jobs(alice, catalog, tmp_path):
    pidfile = tmp_path / "term.pid"
    batch = _sleeper(alice, catalog, pidfile, max_attempts=1)
    worker = start_worker()
    job_pid = _wait_running(batch, pidfile)
    stderr = stop_worker_process(worker)
    assert worker.returncode == 0, stderr
    assert not pid_alive(job_pid)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts, job.charged_attempts) == ("RUNNABLE", 1, 0), "a stop does not use up the attempt"
    assert Worker.objects.get().state == "STOPPED"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="several workers racing need PostgreSQL")
def test_four_workers_start_each_of_500_jobs_exactly_once(alice, catalog, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f'echo "$BATCH_WORKER_ID" >> {marks}/$BATCH_JOB_ID'
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}} for _ in range(500)])
    workers = [start_worker("--cpus", "4") for _ in range(4)]
    try:
        wait_for(all_finished(batch), timeout=120, interval=0.2, message="500 jobs did not finish")
    finally:
        errors = [stop_worker_process(worker) for worker in workers]
    assert set(statuses(batch)) == {"SUCCEEDED"}
    files = list(marks.iterdir())
    assert len(files) == 500
    assert all(len(path.read_text().splitlines()) == 1 for path in files), "a job ran twice"
    assert set(Job.objects.filter(batch=batch).values_list("attempts", flat=True)) == {1}
    assert JobEvent.objects.filter(job__batch=batch, to_status="STARTING").count() == 500
    used = {line for path in files for line in path.read_text().splitlines()}
    assert len(used) > 1, "the jobs were shared between workers"
    assert not any("Traceback" in err for err in errors), errors


def test_hung_worker_is_fenced_and_its_job_retried_after_the_lease(alice, catalog, tmp_path):
    pidfile = tmp_path / "hung.pid"
    batch = _sleeper(alice, catalog, pidfile, max_attempts=2)
    first = start_worker()
    second = None
    try:
        job_pid = _wait_running(batch, pidfile)
        os.kill(first.pid, signal.SIGSTOP)  # alive but silent: no heartbeat
        second = start_worker()
        # The guard kills the job before the lease ends, so the retry is never a second
        # live attempt.
        wait_for(lambda: not pid_alive(job_pid), timeout=5, message="the hung worker's job was not fenced")
        assert Job.objects.get(batch=batch).attempts == 1
        wait_for(all_finished(batch), timeout=30)
        os.kill(first.pid, signal.SIGCONT)
        time.sleep(1)  # the first worker finds its lease gone and must not report anything
    finally:
        os.kill(first.pid, signal.SIGCONT)
        stop_worker_process(first)
        if second is not None:
            stop_worker_process(second)
    job = Job.objects.get(batch=batch)
    assert (job.status, job.attempts) == ("SUCCEEDED", 2)
    assert JobEvent.objects.filter(job=job, to_status="SUCCEEDED").count() == 1


FAKE_CLUSTER = "tests.fake_cluster.FakeClusterExecutor"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_attempts_that_outlive_their_worker_are_adopted_not_run_twice(alice, catalog, tmp_path, how):
    """Through the fake cluster (attempts run outside the worker, as Slurm jobs do): the
    first worker starts the attempt and dies (or stops); the next adopts it, follows it
    to its end and records it once. The attempt ran once."""
    marks, release = tmp_path / "marks", tmp_path / "release"
    marks.mkdir()
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": held_jobs_script(marks, release)}} for _ in range(3)])
    env = {"BATCHES_EXECUTOR": FAKE_CLUSTER, "FAKE_CLUSTER_DIR": str(tmp_path / "cluster")}
    first = start_worker(**env)
    try:
        wait_for(lambda: statuses(batch) == ["RUNNING"] * 3 and len(list(marks.iterdir())) == 3, timeout=30)
        if how == "SIGKILL":
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        else:
            assert first.returncode is None
            stop_worker_process(first)
            assert first.returncode == 0
        assert statuses(batch) == ["RUNNING"] * 3, "a cluster's attempts are not requeued when their worker goes"
    except BaseException:
        release.write_text("")
        stop_worker_process(first)
        raise
    hand_over(batch, env=env, first=first, marks=marks, release=release, count=3, timeout=30)
    for job in Job.objects.filter(batch=batch):
        attempt = job.attempt_records.get()
        assert (attempt.state, attempt.executor) == ("ENDED", "fakecluster")
        assert re.fullmatch(r"\d+_\d+", attempt.external_id), "named by the fake scheduler: <array id>_<index>"
    assert Worker.objects.get(pid=first.pid).state == ("LOST" if how == "SIGKILL" else "STOPPED")


def test_stale_jobs_reports_and_settles_the_jobs_of_a_silent_worker(alice, catalog):
    """A worker that stopped answering (here: its lease set in the past) holds a RUNNING
    job; the command says so, and --settle recovers it as a worker's sweep would."""
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    from jobs.executors.base import Capacity
    from jobs.leases import register_worker
    from jobs.statuses import Status

    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}}])
    worker = register_worker(executor="local", capacity=Capacity(2, 1024), lease_seconds=30, keeps_attempts=False, isolation={})
    Job.objects.filter(batch=batch).update(status=Status.RUNNING, worker=worker, attempts=1)
    Worker.objects.filter(pk=worker.pk).update(lease_expires=timezone.now() - timedelta(seconds=90))
    out = StringIO()
    call_command("stale_jobs", stdout=out)
    assert f"worker {worker.name} (local): lease ran out" in out.getvalue() and "1 live job(s)" in out.getvalue()
    assert statuses(batch) == ["RUNNING"], "a report changes nothing"
    out = StringIO()
    call_command("stale_jobs", "--settle", stdout=out)
    assert "settled: 1 job(s) recovered" in out.getvalue()
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason, job.requeues) == (
        "RUNNABLE",
        "Attempt 1 stopped (worker lost); requeued, using no attempt (not the job's doing; requeue 1 of 5)",
        1,
    )
    assert Worker.objects.get(pk=worker.pk).state == "LOST"
