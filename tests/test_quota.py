"""Per-user quota (BATCHES_USER_MAX_ACTIVE_JOBS): a user's jobs beyond it wait PENDING
with a reason, other users' jobs are not held back, and waiting jobs move on as the
user's active jobs finish. Real worker loop and processes."""

import threading

import pytest
from django.db import connection, transaction

from jobs.dispatch import _take_dispatch_lock, dispatch_submitted
from jobs.models import Job
from jobs.services import cancel_jobs
from tests.worker_helpers import all_finished, drive, in_process_loop, make_batch, statuses

pytestmark = pytest.mark.django_db

QUOTA_REASON = "Over your quota: at most 2 of your jobs may be queued or running at once; waiting for one to finish"


@pytest.fixture
def quota(settings):
    settings.BATCHES_USER_MAX_ACTIVE_JOBS = 2


def test_jobs_over_the_quota_wait_pending_with_a_reason(quota, alice, bob, catalog):
    loop = in_process_loop(cpus=1, memory_mib=1024)
    try:
        dispatch_submitted()  # nothing yet: a no-op
        big = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(5)])
        other = make_batch(bob, catalog["tools"]["echo"], catalog, [{"args": {"message": "bob"}}])
        dispatch_submitted()
        assert statuses(big) == ["RUNNABLE", "RUNNABLE", "PENDING", "PENDING", "PENDING"]
        assert {job.reason for job in Job.objects.filter(batch=big, status="PENDING")} == {QUOTA_REASON}
        assert statuses(other) == ["RUNNABLE"]  # bob has his own quota

        # Cancelling alice's queued jobs frees her quota for the next ones, in order.
        cancel_jobs(jobs=Job.objects.filter(batch=big, index__in=[0, 1]))
        dispatch_submitted()
        assert statuses(big) == ["FAILED", "FAILED", "RUNNABLE", "RUNNABLE", "PENDING"]

        drive(loop, all_finished(big))
        assert statuses(big) == ["FAILED", "FAILED", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]
        drive(loop, all_finished(other))
    finally:
        loop.stop()


def test_no_quota_by_default(alice, catalog):
    loop = in_process_loop(cpus=1, memory_mib=1024)
    try:
        batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(5)])
        dispatch_submitted()
        assert statuses(batch).count("PENDING") == 0
    finally:
        loop.stop()


@pytest.mark.django_db(transaction=True)
def test_one_dispatcher_at_a_time(alice, catalog):
    """While one worker's dispatch transaction holds the dispatcher lock, another's
    dispatch skips its turn instead of updating the same rows (which deadlocked on
    PostgreSQL). On SQLite the IMMEDIATE transaction serialises them instead."""
    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's; SQLite serialises writers")
    loop = in_process_loop(cpus=1, memory_mib=1024)
    try:
        batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "x"}}])
        other_result = []
        with transaction.atomic():
            assert _take_dispatch_lock()

            def other_worker() -> None:
                try:
                    other_result.append(dispatch_submitted())
                finally:
                    connection.close()

            thread = threading.Thread(target=other_worker)
            thread.start()
            thread.join()
        assert other_result == [0]
        assert statuses(batch) == ["SUBMITTED"]
        assert dispatch_submitted() == 1
        assert statuses(batch) == ["RUNNABLE"]
    finally:
        loop.stop()
