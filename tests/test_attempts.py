"""The attempt model (issue 6): one live attempt per job, cancel as a request the worker
confirms, a worker that survives a poison job, delete during dispatch, a database outage
longer than the lease, batches that run the command they were submitted with. Real
processes, real databases; the outage is simulated (see its test)."""

import time

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.utils import DatabaseError

from batches.models import Batch, Tool
from jobs.executors.isolation import Isolation
from jobs.executors.local import LocalExecutor
from jobs.executors.procs import processes_with_env
from jobs.models import Attempt, Job, JobEvent
from jobs.removal import delete_batches, purge_deleted_batches
from jobs.statuses import Status
from jobs.transitions import transition
from jobs.worker import WorkerConfig, WorkerLoop
from tests.worker_helpers import all_finished, drive, in_process_loop, make_batch, race_with_open_transaction, script_tool, statuses

pytestmark = pytest.mark.django_db


def live_processes_of(job: Job) -> list[int]:
    """Pids on this machine running (any attempt of) `job`."""
    return [pid for pid, value in processes_with_env("BATCH_JOB_ID").items() if value == str(job.pk)]


def live_attempts_of(job: Job) -> set[str]:
    """Attempt numbers of `job` that have a process on this machine."""
    attempts = processes_with_env("BATCH_ATTEMPT")
    return {attempts[pid] for pid in live_processes_of(job) if pid in attempts}


def test_cancel_then_retry_never_runs_two_attempts_at_once(alice, alice_client, catalog):
    # The job shrugs off SIGTERM, so stopping it takes the whole grace period: the window
    # in which a retry used to start attempt 2 beside attempt 1.
    script = "trap '' TERM; sleep 30"
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}])
    job = Job.objects.get(batch=batch)
    first, second = in_process_loop(grace=1.5), in_process_loop(grace=1.5)
    seen: list[int] = []

    def step_both() -> None:
        first.step()
        second.step()
        seen.append(len(live_attempts_of(job)))

    try:
        while Job.objects.get(pk=job.pk).status != "RUNNING" or not live_processes_of(job):
            step_both()
        response = alice_client.post(f"/batches/{batch.pk}/jobs/{job.pk}/cancel")
        assert response.json() == {"changed": 1, "stopping": 1}
        job.refresh_from_db()
        assert (job.status, job.reason) == ("RUNNING", "Cancel requested; waiting for the attempt to stop")
        assert job.cancel_requested_by == alice and job.cancel_requested_at is not None
        retry = alice_client.post(f"/batches/{batch.pk}/retry")
        assert retry.status_code == 409, retry.content
        assert retry["Content-Type"] == "application/problem+json"
        assert "still stopping" in retry.json()["detail"]
        # Keep asking: the retry must not get in while the attempt is still stopping.
        deadline = time.monotonic() + 20
        while (response := alice_client.post(f"/batches/{batch.pk}/retry")).status_code == 409:
            assert time.monotonic() < deadline, "the cancel was never confirmed"
            step_both()
        assert response.json() == {"changed": 1}
        assert live_processes_of(job) == [], "FAILED only once the attempt has stopped"
        cancelled = JobEvent.objects.filter(job=job, to_status="FAILED").get()
        assert cancelled.reason == "Cancelled by user"
        deadline = time.monotonic() + 20
        while not live_processes_of(job):
            assert time.monotonic() < deadline, "the retry did not start"
            step_both()
        for _ in range(20):
            step_both()
    finally:
        first.stop()
        second.stop()
    assert max(seen) == 1, f"two live attempts of one job at once: {seen}"
    rows = list(Attempt.objects.filter(job=job).order_by("number").values_list("number", "state", "reason"))
    assert rows[0] == (1, "ENDED", "Cancelled by user")
    assert [number for number, _, _ in rows] == [1, 2]


def test_cancel_of_a_queued_job_is_immediate(alice, alice_client, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "never"}}])
    assert alice_client.post(f"/batches/{batch.pk}/cancel").json() == {"changed": 1, "stopping": 0}
    job = Job.objects.get(batch=batch)
    assert (job.status, job.reason, job.cancel_requested_by) == ("FAILED", "Cancelled by user", alice)
    assert not Attempt.objects.filter(job=job).exists()


def test_worker_survives_a_poison_job_and_runs_the_healthy_one_behind_it(alice, catalog):
    poison = Tool.objects.create(name="poison", command=["/bin/echo", "x"], parameters={})
    bad = make_batch(alice, poison, catalog, [{"args": {}}])
    # A command that is not a list of strings (what the admin form let through).
    Batch.objects.filter(pk=bad.pk).update(command=42)
    good = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "still here"}}])
    loop = in_process_loop()
    try:
        drive(loop, lambda: all_finished(bad)() and all_finished(good)())
    finally:
        loop.stop()
    job = Job.objects.get(batch=bad)
    assert job.status == "FAILED"
    assert job.reason.startswith("internal error: TypeError"), job.reason
    assert statuses(good) == ["SUCCEEDED"]


def test_an_unwritable_work_directory_fails_the_attempt_not_the_worker(alice, catalog, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    executor = LocalExecutor(cpus=2, memory_mib=4096, grace_seconds=0.5, work_dir=tmp_path, isolation=Isolation.none())
    executor.work_dir = blocker  # every attempt's mkdir fails: NotADirectoryError
    loop = WorkerLoop(executor=executor, config=WorkerConfig(lease_seconds=30, poll_seconds=0.05, fencing=False))
    loop.start()
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "a"}}, {"args": {"message": "b"}}])
    try:
        drive(loop, all_finished(batch))
        executor.work_dir = tmp_path / "work"  # repaired: the worker goes on
        after = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "c"}}])
        drive(loop, all_finished(after))
    finally:
        loop.stop()
    reasons = list(Job.objects.filter(batch=batch).values_list("reason", flat=True))
    assert all(reason.startswith("internal error: NotADirectoryError: [Errno 20] Not a directory") for reason in reasons), reasons
    assert statuses(after) == ["SUCCEEDED"]


def test_a_batch_runs_the_command_it_was_submitted_with(alice, alice_client, catalog):
    tool = catalog["tools"]["echo"]
    batch = make_batch(alice, tool, catalog, [{"args": {"message": "hello"}}])
    tool.command = ["/bin/echo", "EDITED", "{message}"]
    tool.save()
    loop = in_process_loop()
    try:
        drive(loop, all_finished(batch))
        later = make_batch(alice, tool, catalog, [{"args": {"message": "hello"}}])
        drive(loop, all_finished(later))
    finally:
        loop.stop()
    first, second = Job.objects.get(batch=batch), Job.objects.get(batch=later)
    assert alice_client.get(f"/logs/{first.log_id}").content == b"hello\n"
    assert alice_client.get(f"/logs/{second.log_id}").content == b"EDITED hello\n"


@pytest.mark.django_db(transaction=True)
def test_an_outage_longer_than_the_lease_is_not_the_jobs_fault(alice, catalog):
    """Simulated outage: every statement of the worker's connection fails (Django's
    `execute_wrapper` hook), as when the database is unreachable; a real outage cannot
    be made here without stopping the database the rest of the suite uses. The fence
    (a real forked guard) kills the attempt when the lease runs out."""
    script = 'if [ "$BATCH_ATTEMPT" = 1 ]; then sleep 30; fi; echo done'
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}], max_attempts=1)
    job = Job.objects.get(batch=batch)
    executor = LocalExecutor(cpus=2, memory_mib=4096, grace_seconds=0.5, isolation=Isolation.none())
    loop = WorkerLoop(executor=executor, config=WorkerConfig(lease_seconds=1.5, poll_seconds=0.05, fencing=True))
    loop.start()

    def outage(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly (simulated outage)")

    try:
        drive(loop, lambda: Job.objects.get(pk=job.pk).status == "RUNNING" and live_processes_of(job))
        with connection.execute_wrapper(outage):
            ends = time.monotonic() + 3.0  # twice the lease
            while time.monotonic() < ends:
                try:
                    loop.step()
                except DatabaseError:
                    time.sleep(0.05)
        assert not live_processes_of(job), "the fence stops the attempt when the lease runs out"
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.charged_attempts) == ("SUCCEEDED", 2, 0)
    first = Attempt.objects.get(job=job, number=1)
    assert (first.reason, first.charged) == ("worker lost contact with the database", False)
    requeued = JobEvent.objects.get(job=job, to_status="RUNNABLE", attempt=1)
    assert requeued.reason == (
        "Attempt 1 stopped (worker lost contact with the database); requeued, using no attempt (not the job's doing; requeue 1 of 5)"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks between two connections: PostgreSQL")
def test_delete_while_a_worker_records_a_change_is_never_an_error(alice, catalog):
    """A worker's transaction has written a status change and its event (rows locked,
    not yet committed) when the delete comes: the delete's purge passes those rows by
    (SKIP LOCKED) instead of failing on the foreign key at commit, and the housekeeping's
    next purge removes them with the event."""
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(50)])
    ids = list(Job.objects.filter(batch=batch).values_list("pk", flat=True))
    errors = race_with_open_transaction(
        lambda: transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE, reason="placed"),
        lambda: delete_batches(batches=Batch.objects.filter(pk=batch.pk)),
    )
    assert not [e for e in errors if isinstance(e, IntegrityError | DatabaseError)], errors
    assert not errors, errors
    assert Batch.objects.get(pk=batch.pk).deleted_at is not None, "gone from its owner's view at once"
    purge_deleted_batches()  # the housekeeping's next purge
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not JobEvent.objects.filter(job_id__in=ids).exists()


def test_delete_during_dispatch_through_the_api_is_204(alice, alice_client, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(200)])
    loop = in_process_loop()
    try:
        loop.step()
        assert alice_client.delete(f"/batches/{batch.pk}").status_code == 204
        for _ in range(20):
            loop.step()
    finally:
        loop.stop()
    assert not Job.objects.filter(batch_id=batch.pk).exists()
    assert not Attempt.objects.filter(job__batch_id=batch.pk).exists()


def test_attempt_rows_record_where_and_how_each_attempt_ran(alice, catalog):
    batch = make_batch(alice, catalog["tools"]["fail"], catalog, [{"args": {"code": 3}}], max_attempts=2)
    loop = in_process_loop()
    try:
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    job = Job.objects.get(batch=batch)
    rows = list(Attempt.objects.filter(job=job).order_by("number"))
    assert [(a.number, a.state, a.exit_code, a.reason, a.executor) for a in rows] == [
        (1, "ENDED", 3, "exit code 3", "local"),
        (2, "ENDED", 3, "exit code 3", "local"),
    ]
    for attempt in rows:
        assert attempt.external_id.isdigit()  # the pid, on `node`
        assert attempt.worker_id == loop.worker.pk and attempt.node
        assert attempt.create_time <= attempt.start_time <= attempt.end_time
    assert rows[0].log_offset == 0 and rows[1].log_offset > 0


def test_the_database_refuses_a_second_live_attempt(alice, catalog):
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "x"}}])
    job = Job.objects.get(batch=batch)
    Attempt.objects.create(job=job, number=1, executor="local")
    with pytest.raises(IntegrityError), transaction.atomic():
        Attempt.objects.create(job=job, number=2, executor="local")


def test_log_sections_per_attempt(alice, alice_client, catalog):
    script = 'echo "attempt $BATCH_ATTEMPT"; [ "$BATCH_ATTEMPT" = 2 ]'
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": script}}], max_attempts=2)
    loop = in_process_loop()
    try:
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    job = Job.objects.get(batch=batch)
    log = alice_client.get(f"/logs/{job.log_id}").content
    assert log == b"attempt 1\n--- attempt 2 ---\nattempt 2\n"
    second = Attempt.objects.get(job=job, number=2)
    assert log[second.log_offset :].startswith(b"--- attempt 2 ---")
