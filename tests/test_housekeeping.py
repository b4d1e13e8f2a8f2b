"""The deployment's housekeeping (issue 18): every worker ran it in its loop, up to five
times a second, and they contended for the same rows. Now one worker at a time does it:
the oldest live one, and on PostgreSQL never two runs at once; when that worker stops or
dies, the next one takes over."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from batches.models import Batch
from jobs.executors.base import Capacity
from jobs.housekeeping import housekeep, sweeper_id
from jobs.leases import register_worker, stop_worker
from jobs.models import Job, Worker
from jobs.services import lock_rows
from tests.worker_helpers import make_batch

pytestmark = pytest.mark.django_db


def worker(*, started_ago: int) -> Worker:
    row = register_worker(executor="local", capacity=Capacity(2, 4096), lease_seconds=30)
    Worker.objects.filter(pk=row.pk).update(started_at=timezone.now() - timedelta(seconds=started_ago))
    return row


def deleted_batch(alice, catalog, n: int) -> Batch:
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(n)])
    Batch.objects.filter(pk=batch.pk).update(deleted_at=timezone.now())
    return batch


def test_only_the_oldest_live_worker_does_the_housekeeping_and_the_next_takes_over(alice, catalog):
    first, second = worker(started_ago=60), worker(started_ago=10)
    batch = deleted_batch(alice, catalog, 3)
    assert sweeper_id() == first.pk
    assert housekeep(worker=second) is None, "not elected: nothing done"
    assert Job.objects.filter(batch=batch).count() == 3
    assert housekeep(worker=first).purged == 3

    # The sweeper stops: the next worker sweeps at its next call.
    batch = deleted_batch(alice, catalog, 2)
    stop_worker(worker=first)
    assert sweeper_id() == second.pk
    assert housekeep(worker=second).purged == 2


def test_a_sweeper_that_died_is_recovered_by_the_next(alice, catalog):
    first, second = worker(started_ago=60), worker(started_ago=10)
    assert housekeep(worker=second) is None
    Worker.objects.filter(pk=first.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))  # no heartbeat
    assert housekeep(worker=second) is not None
    assert Worker.objects.get(pk=first.pk).state == Worker.State.LOST
    assert housekeep(worker=first) is None, "its lease ran out: no longer the sweeper"


@pytest.mark.django_db(transaction=True)
def test_two_runs_never_overlap_and_the_next_happens_once_the_first_ends(alice, catalog):
    """Two workers that each believe they are the sweeper (or commands): while one run
    is under way, here waiting on a job row another transaction holds, the other
    returns at once having done nothing; once the first ends, housekeeping goes on."""
    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock and row locks are PostgreSQL's; SQLite has one writer")
    batch = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": str(i)}} for i in range(4)])
    Batch.objects.filter(pk=batch.pk).update(cancel_requested_at=timezone.now())  # a cancel under way
    runs: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            runs[name] = housekeep()
        except BaseException as exc:  # reported to the test thread
            runs[name] = exc
        finally:
            connection.close()

    first = threading.Thread(target=run, args=("first",))
    with transaction.atomic():
        lock_rows(Job.objects.filter(batch=batch))  # a worker recording a change to them
        first.start()
        # The first run holds the role and waits on the rows (advancing the cancel).
        for _ in range(100):
            time.sleep(0.05)
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
                if cursor.fetchone()[0]:
                    break
        else:
            pytest.fail("the first run never waited on the rows")
        second = threading.Thread(target=run, args=("second",))
        second.start()
        second.join(10)
        assert "second" in runs, "the second run waited for the first: both were housekeeping"
        assert runs["second"] is None, "a second run at the same time did nothing"
    first.join(10)
    assert runs["first"].cancelled == 4, runs["first"]
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"FAILED"}
    assert housekeep() is not None, "the role is free again"
