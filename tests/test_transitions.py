"""transition() has two implementations, the plain-SQL fast path (every call the worker
makes) and the ORM path (anything the fast path does not translate): the same calls
must leave the same job rows and the same events, on SQLite and PostgreSQL alike."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F, Q
from django.test.utils import CaptureQueriesContext

from jobs import transitions, transitions_sql
from jobs.models import Job, JobEvent, Worker
from jobs.statuses import LIVE, UNFINISHED, Status
from jobs.submission import submit_batch
from jobs.transitions import transition

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
JOB_COLUMNS = ("index", "status", "reason", "attempts", "exit_code", "worker_id", "start_time", "stop_time")
EVENT_COLUMNS = ("job__index", "from_status", "to_status", "reason", "attempt", "time")


@pytest.fixture
def workers(db):
    return [Worker.objects.create(name=f"w{i}", node="n", cpus=4, memory_mib=1024, lease_expires=T0 + timedelta(hours=1)) for i in range(2)]


def make_batch(alice, catalog, n=6):
    batch = submit_batch(
        user=alice,
        tool_id=catalog["tools"]["echo"].pk,
        cpu=1,
        memory=64,
        filesystem_ids=[catalog["filesystems"]["scratch"].pk],
        jobs=[{"args": {"message": str(i)}} for i in range(n)],
    )
    return list(Job.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True))


def script(ids, workers):
    """A history that goes through every kind of call: single and several sources,
    guards that match and guards that do not, F() increments and decrements, fields set
    to values, to NULL, and to a foreign key."""
    w, other = workers
    tick = iter(T0 + timedelta(seconds=s) for s in range(100))
    return [
        {"job_ids": ids[:5], "from_statuses": [Status.SUBMITTED], "to_status": Status.RUNNABLE, "reason": "fits", "now": next(tick)},
        {"job_ids": ids[5:], "from_statuses": [Status.SUBMITTED], "to_status": Status.PENDING, "reason": "too big", "now": next(tick)},
        {
            "job_ids": ids[:4],
            "from_statuses": [Status.RUNNABLE],
            "to_status": Status.STARTING,
            "reason": "Placed",
            "now": next(tick),
            "worker": w,
            "attempts": F("attempts") + 1,
        },
        {
            "job_ids": ids[:3],
            "from_statuses": [Status.STARTING],
            "to_status": Status.RUNNING,
            "now": next(tick),
            "guard": Q(worker=w, attempts=1),
        },
        # A late report from another worker, and one about an older attempt: no change.
        {"job_ids": ids[:3], "from_statuses": LIVE, "to_status": Status.SUCCEEDED, "now": next(tick), "guard": Q(worker=other, attempts=1)},
        {"job_ids": ids[:3], "from_statuses": LIVE, "to_status": Status.SUCCEEDED, "now": next(tick), "guard": Q(worker=w, attempts=0)},
        # Several sources: ids[0] RUNNING, ids[3] STARTING.
        {
            "job_ids": [ids[0], ids[3]],
            "from_statuses": LIVE,
            "to_status": Status.SUCCEEDED,
            "now": next(tick),
            "guard": Q(worker=w, attempts=1),
            "exit_code": 0,
        },
        {
            "job_ids": [ids[1]],
            "from_statuses": LIVE,
            "to_status": Status.RUNNABLE,
            "reason": "Attempt 1 failed (exit code 3); waiting to retry",
            "now": next(tick),
            "guard": Q(worker=w, attempts=1),
            "exit_code": 3,
        },
        {
            "job_ids": [ids[2]],
            "from_statuses": LIVE,
            "to_status": Status.RUNNABLE,
            "reason": "Requeued",
            "now": next(tick),
            "guard": Q(worker=w),
            "attempts": F("attempts") - 1,
        },
        # Started and ended between two writes: through RUNNING, two events, one write.
        {
            "job_ids": [ids[1]],
            "from_statuses": [Status.RUNNABLE],
            "to_status": Status.STARTING,
            "now": next(tick),
            "worker": w,
            "attempts": F("attempts") + 1,
        },
        {
            "job_ids": [ids[1]],
            "from_statuses": [Status.STARTING],
            "through": Status.RUNNING,
            "to_status": Status.FAILED,
            "reason": "exit code 4",
            "now": next(tick),
            "guard": Q(worker=w, attempts=2),
            "exit_code": 4,
        },
        # Cancel everything unfinished: RUNNABLE, PENDING and so on at once.
        {"job_ids": ids, "from_statuses": UNFINISHED, "to_status": Status.FAILED, "reason": "Cancelled by user", "now": next(tick)},
        {
            "job_ids": ids,
            "from_statuses": [Status.FAILED],
            "to_status": Status.RUNNABLE,
            "reason": "Retry",
            "now": next(tick),
            "exit_code": None,
        },
        # A guard the fast path does not translate (a lookup): the ORM runs it either way.
        {
            "job_ids": ids,
            "from_statuses": [Status.RUNNABLE],
            "to_status": Status.PENDING,
            "reason": "x",
            "now": next(tick),
            "guard": Q(attempts__gte=1),
        },
    ]


def history(ids):
    jobs = list(Job.objects.filter(pk__in=ids).order_by("index").values_list(*JOB_COLUMNS))
    events = list(JobEvent.objects.filter(job__in=ids).order_by("job__index", "id").values_list(*EVENT_COLUMNS))
    return jobs, events


def test_fast_and_orm_paths_write_the_same_rows_and_events(alice, catalog, workers, monkeypatch):
    fast_ids, orm_ids = make_batch(alice, catalog), make_batch(alice, catalog)
    calls = []
    real_fast, real_orm = transitions.fast_transition, transitions._orm_transition

    def counting(path, real):
        def call(**kwargs):
            calls.append(path)
            return real(**kwargs)

        return call

    monkeypatch.setattr(transitions, "fast_transition", counting("fast", real_fast))
    monkeypatch.setattr(transitions, "_orm_transition", counting("orm", real_orm))
    fast_results = [transition(**call) for call in script(fast_ids, workers)]
    # Every call but the last (a guard with a lookup) took the fast path.
    assert calls == ["fast"] * (len(fast_results) - 1) + ["orm"]
    fast_changed = [sorted(map(str, result)) for result in fast_results]
    assert {type(pk) for result in fast_results for pk in result} == {type(fast_ids[0])}

    calls.clear()
    monkeypatch.setattr(transitions_sql.FastPlan, "build", classmethod(lambda cls, **kwargs: None))
    orm_changed = [sorted(map(str, transition(**call))) for call in script(orm_ids, workers)]
    assert calls == ["orm"] * len(orm_changed)

    index_of = {str(pk): i for i, pk in enumerate(fast_ids)} | {str(pk): i for i, pk in enumerate(orm_ids)}
    assert [sorted(index_of[pk] for pk in c) for c in fast_changed] == [sorted(index_of[pk] for pk in c) for c in orm_changed]
    assert history(fast_ids) == history(orm_ids)
    jobs, events = history(fast_ids)
    assert len(events) > 20
    # Sanity: the script did what it says.
    assert [row[1] for row in jobs] == [
        Status.SUCCEEDED,
        Status.PENDING,
        Status.RUNNABLE,
        Status.SUCCEEDED,
        Status.RUNNABLE,
        Status.RUNNABLE,
    ]


def test_the_worker_calls_take_the_fast_path(workers):
    w = workers[0]
    for updates, guard in [
        ({"status": Status.STARTING, "reason": "Placed", "worker": w, "attempts": F("attempts") + 1}, None),
        ({"status": Status.RUNNING, "reason": "", "start_time": T0}, Q(worker=w, attempts=1)),
        ({"status": Status.SUCCEEDED, "reason": "", "stop_time": T0, "exit_code": 0}, Q(worker=w, attempts=1)),
        ({"status": Status.RUNNABLE, "reason": "r", "start_time": None, "stop_time": None, "attempts": F("attempts") - 1}, Q(worker=w)),
    ]:
        assert transitions_sql.FastPlan.build(updates=updates, guard=guard) is not None
    assert transitions_sql.FastPlan.build(updates={"status": Status.FAILED}, guard=Q(attempts__gte=1)) is None
    assert transitions_sql.FastPlan.build(updates={"status": Status.FAILED}, guard=~Q(worker=w)) is None
    assert transitions_sql.FastPlan.build(updates={"status": Status.FAILED, "attempts": F("exit_code") * 2}, guard=None) is None


def _updates_of_jobs(captured) -> int:
    table = Job._meta.db_table
    return sum(1 for query in captured.captured_queries if query["sql"].lstrip().upper().startswith("UPDATE") and table in query["sql"])


def test_both_paths_write_chunk_jobs_per_statement(alice, catalog):
    """`chunk` is the caller's: 10 jobs in chunks of 4 are three UPDATEs, on the fast
    path and on the ORM's (a guard it cannot translate)."""
    ids = make_batch(alice, catalog, n=10)
    with CaptureQueriesContext(connection) as captured:
        changed = transition(job_ids=ids, from_statuses=[Status.SUBMITTED], to_status=Status.RUNNABLE, reason="r", chunk=4)
    assert sorted(changed) == sorted(ids) and _updates_of_jobs(captured) == 3
    with CaptureQueriesContext(connection) as captured:
        changed = transition(job_ids=ids, from_statuses=UNFINISHED, to_status=Status.FAILED, reason="Cancelled by user", chunk=4)
    assert sorted(changed) == sorted(ids) and _updates_of_jobs(captured) == 3
    assert transitions_sql.FastPlan.build(updates={"status": Status.RUNNABLE}, guard=Q(attempts__gte=0)) is None  # the ORM's
    with CaptureQueriesContext(connection) as captured:
        changed = transition(
            job_ids=ids, from_statuses=[Status.FAILED], to_status=Status.RUNNABLE, reason="again", guard=Q(attempts__gte=0), chunk=4
        )
    assert sorted(changed) == sorted(ids) and _updates_of_jobs(captured) == 3
    assert JobEvent.objects.filter(job__in=ids).count() == 30
    assert set(Job.objects.filter(pk__in=ids).values_list("status", flat=True)) == {Status.RUNNABLE}
