"""`manage.py cleanup` and log removal: old finished batches go with their jobs, events
and log files; unfinished or recent ones stay."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from batches.models import Batch
from jobs.logs import log_path
from jobs.models import Job, JobEvent
from jobs.removal import cleanup_batches
from jobs.services import cancel_jobs
from tests.worker_helpers import make_batch

pytestmark = pytest.mark.django_db


def finished_batch(user, catalog, *, with_logs: bool = True) -> Batch:
    batch = make_batch(user, catalog["tools"]["echo"], catalog, [{"args": {"message": "a"}}, {"args": {"message": "b"}}])
    cancel_jobs(jobs=Job.objects.filter(batch=batch))
    if with_logs:
        for job in Job.objects.filter(batch=batch):
            log_path(job.log_id).parent.mkdir(parents=True, exist_ok=True)
            log_path(job.log_id).write_text("output\n")
        Job.objects.filter(batch=batch).update(attempts=1)  # a job with a log has started
    return batch


def test_cleanup_deletes_old_finished_batches_only(alice, bob, catalog, django_capture_on_commit_callbacks):
    old = finished_batch(alice, catalog)
    other_users = finished_batch(bob, catalog)
    unfinished = make_batch(alice, catalog["tools"]["echo"], catalog, [{"args": {"message": "queued"}}])
    logs = [log_path(job.log_id) for job in Job.objects.filter(batch=old)]
    assert all(path.exists() for path in logs)

    later = timezone.now() + timedelta(days=31)
    assert cleanup_batches(older_than=timedelta(days=30), dry_run=True, now=later) == (2, 4)
    assert Batch.objects.count() == 3

    with django_capture_on_commit_callbacks(execute=True):  # logs go once the deletion commits
        assert cleanup_batches(older_than=timedelta(days=30), now=later) == (2, 4)
    assert list(Batch.objects.all()) == [unfinished]
    assert not Job.objects.filter(batch_id__in=[old.pk, other_users.pk]).exists()
    assert not JobEvent.objects.filter(job__batch_id__in=[old.pk, other_users.pk]).exists()
    assert not any(path.exists() for path in logs)


def test_recent_activity_keeps_a_batch(alice, catalog):
    finished_batch(alice, catalog)
    assert cleanup_batches(older_than=timedelta(days=30)) == (0, 0)  # finished just now
    assert Batch.objects.count() == 1


def test_cleanup_command(alice, catalog):
    finished_batch(alice, catalog)
    out = StringIO()
    call_command("cleanup", "--older-than", "0s", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "would delete 1 batch(es) and 2 job(s) finished more than 0s ago"
    assert Batch.objects.count() == 1
    out = StringIO()
    call_command("cleanup", "--older-than", "0s", stdout=out)
    assert out.getvalue().splitlines() == [
        "deleted 1 batch(es) and 2 job(s) finished more than 0s ago",
        "forgot 0 Idempotency-Key(s) older than a day",
        "pruned 0 event(s) older than 30 day(s)",
    ]
    assert Batch.objects.count() == 0


def test_cleanup_of_one_user_leaves_the_others(alice, bob, catalog):
    finished_batch(alice, catalog)
    kept = finished_batch(bob, catalog)
    out = StringIO()
    call_command("cleanup", "--older-than", "0s", "--user", "alice", stdout=out)
    assert out.getvalue().splitlines()[0] == "deleted 1 batch(es) of alice and 2 job(s) finished more than 0s ago"
    assert list(Batch.objects.all()) == [kept]
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("cleanup", "--user", "nobody")


@pytest.mark.parametrize(
    ("duration", "words"),
    [
        ("thirty days", "must be a number and a unit"),
        ("\u0663d", "must be a number and a unit"),  # an Arabic-Indic 3 was taken for 3 days
        ("999999999d", "at most 100 years"),  # was an OverflowError traceback
        ("999999999999w", "at most 100 years"),  # beyond any timedelta
        ("9999999999999d", "must be a number and a unit"),
    ],
)
def test_cleanup_refuses_a_bad_duration(db, duration, words):
    with pytest.raises(CommandError, match=words):
        call_command("cleanup", "--older-than", duration)


def test_cleanup_takes_any_age_within_100_years(db):
    """31.7 years as 1000000000s was refused as 'must be a number and a unit' (more than
    nine digits)."""
    call_command("cleanup", "--older-than", "1000000000s", "--dry-run", stdout=StringIO())


def test_deleting_a_batch_through_the_api_removes_its_logs(alice, alice_client, catalog, django_capture_on_commit_callbacks):
    batch = finished_batch(alice, catalog)
    logs = [log_path(job.log_id) for job in Job.objects.filter(batch=batch)]
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.delete(f"/batches/{batch.pk}").status_code == 204
    assert not any(path.exists() for path in logs)
