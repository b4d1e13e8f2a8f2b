"""The worker loop's writes run on a thread of their own (`jobs.db_writer`) while the
loop goes on with the executor: real processes, an in-process loop, the test database.

The one stand-in: a write is made slow, or made to fail once, by wrapping
`jobs.worker.record_reports` (a database that is slow or fails on cue cannot be had
otherwise). The wrapped function still writes everything."""

import select
import threading
import time

import pytest
from django.db import OperationalError

from jobs import worker as worker_module
from jobs.executors.base import Outcome
from jobs.executors.usage import Usage
from jobs.models import Job, JobEvent
from tests.worker_helpers import all_finished, drive, in_process_loop, make_batch, script_tool

pytestmark = pytest.mark.django_db


def writes_wrapped(monkeypatch, *, delay: float = 0.0, delay_from: int = 0, fail_once: bool = False) -> list[tuple[float, float, list]]:
    """Wrap the loop's recording: each write from the `delay_from`th (0: the first)
    sleeps `delay` after writing; with
    `fail_once`, the first write that has reports raises an OperationalError instead of
    writing them. Returns (start, end, reports) of each write, monotonic seconds."""
    real = worker_module.record_reports
    calls: list[tuple[float, float, list]] = []
    failed = []

    def wrapped(**kwargs):
        started, reports = time.monotonic(), list(kwargs["reports"])
        if fail_once and reports and not failed:
            failed.append(reports)
            calls.append((started, time.monotonic(), reports))
            raise OperationalError("the database went away (test)")
        changed = real(**kwargs)
        if len(calls) >= delay_from:
            time.sleep(delay)
        calls.append((started, time.monotonic(), reports))
        return changed

    monkeypatch.setattr(worker_module, "record_reports", wrapped)
    return calls


def test_an_attempt_that_ends_while_its_start_is_written_is_collected_meanwhile(monkeypatch, alice, catalog):
    """Before, nothing was collected or started while the loop wrote: a slot stayed
    empty for as long as a transaction took."""
    writes_wrapped(monkeypatch, delay=0.6)
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 0.2"}}])
    job = Job.objects.get(batch=batch)
    loop = in_process_loop(cpus=1)
    try:
        drive(loop, lambda: bool(loop.executor.active()))  # claimed and started (asked of a launcher)
        # The step that collects its start writes it; the job ends (0.2 s) while it is
        # written (0.6 s).
        drive(loop, lambda: Job.objects.filter(pk=job.pk, status="RUNNING").exists())
        ended = [r for r in loop._reports if isinstance(r, Outcome)]
        assert [(r.job_id, r.succeeded) for r in ended] == [(str(job.pk), True)], "its end was collected during the write"
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    job.refresh_from_db()
    assert job.status == "SUCCEEDED"


def test_queued_jobs_start_while_a_write_is_in_flight(monkeypatch, alice, catalog):
    """Jobs claimed ahead (short jobs: the loop holds a few more than it runs) start as
    soon as a slot frees, whether or not a write is being made: some starts fall inside
    a write (before, none could: the loop did one thing at a time). The first writes are quick, so that jobs end at a
    rate that makes the loop claim ahead."""
    writes = writes_wrapped(monkeypatch, delay=0.15, delay_from=6)
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}}] * 60)
    loop = in_process_loop(cpus=1)
    starts: dict[str, float] = {}  # job id -> when it was last handed to the executor
    submit, hold = loop.executor.submit, loop.executor.hold

    def timed_submit(specs):
        starts.update((spec.job_id, time.monotonic()) for spec in specs)
        return submit(specs)

    def timed_hold(specs):  # handed over to start in a running one's place
        held = hold(specs)
        starts.update((spec.job_id, time.monotonic()) for spec in specs[:held])
        return held

    monkeypatch.setattr(loop.executor, "submit", timed_submit)
    monkeypatch.setattr(loop.executor, "hold", timed_hold)
    try:
        drive(loop, all_finished(batch), timeout=30)
    finally:
        loop.stop()
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"SUCCEEDED"}
    during = [t for t in starts.values() if any(begin < t < end for begin, end, _ in writes)]
    assert len(starts) == 60
    assert during, f"{len(during)} of 60 starts during {len(writes)} writes"


def test_a_failed_write_is_made_again_with_the_next_and_nothing_is_lost(monkeypatch, alice, catalog):
    writes = writes_wrapped(monkeypatch, fail_once=True)
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}}] * 3)
    loop = in_process_loop(cpus=1)
    try:
        with pytest.raises(OperationalError):
            drive(loop, all_finished(batch))
        lost = next(reports for _, _, reports in writes if reports)
        drive(loop, all_finished(batch))
    finally:
        loop.stop()
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"SUCCEEDED"}
    # The reports of the failed write were written by the next, first.
    failed_at = next(i for i, (_, _, reports) in enumerate(writes) if reports)
    assert writes[failed_at + 1][2][: len(lost)] == lost
    for job in Job.objects.filter(batch=batch):
        steps = list(JobEvent.objects.filter(job=job).order_by("id").values_list("from_status", "to_status"))
        assert steps[-2:] == [("STARTING", "RUNNING"), ("RUNNING", "SUCCEEDED")], steps
        assert len(steps) == len(set(steps)), f"nothing written twice: {steps}"


def test_the_writers_thread_ends_with_the_loop(alice, catalog):
    loop = in_process_loop(cpus=1)
    for _ in range(20):
        loop.step()  # nothing to record: claims, which find nothing
        # The write's signal was cleared: the next write's wait would not wake for it.
        assert select.select([loop._writer.fileno()], [], [], 0)[0] == []
    assert [t for t in threading.enumerate() if t.name.startswith("db-write")]
    loop.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("db-write")]


def ended_after(seconds: float, n: int) -> Outcome:
    usage = Usage.measured(max_rss_bytes=None, cpu_seconds=None, elapsed_seconds=seconds)
    return Outcome(f"j{n}", 1, succeeded=True, usage=usage)


def test_short_jobs_are_claimed_ahead_from_the_first_ends_not_a_second_later():
    """The claim-ahead followed only the rate of ends over the last second, so a stream
    of no-op jobs ramped up over a whole second (two claimed at a time while few had
    ended: 2, 8, 15, 21, 28... ends per 100 ms). The length of the jobs that ended says
    at once how fast the slots turn over."""
    loop = in_process_loop(cpus=2)
    try:
        assert loop._prefetch() == 0
        loop._take([ended_after(0.002, 1)])
        assert loop._prefetch() == 125  # 2 slots / (2 ms + 2 ms a turn) over 0.25 s
        time.sleep(0.1)  # no end since: the next jobs may be long ones (another batch's)
        assert loop._prefetch() == 0  # one end in the last second
        loop._take([ended_after(0.002, 1)])
        assert loop._prefetch() == 125
        loop._take([ended_after(5.0, n) for n in range(2, 40)])  # then long jobs: nothing ahead
        assert loop._prefetch() == int(40 * 0.25)  # the 40 ends of the last second, over 0.25 s
        time.sleep(1.1)
        assert loop._prefetch() == 0
    finally:
        loop._reports.clear()  # made up: not to be written
        loop.stop()


def test_a_large_submission_is_placed_a_sweep_at_a_time_its_first_jobs_claimed_in_between(monkeypatch, alice, catalog):
    """Placing a thousand jobs took one 220 ms transaction, and the first job waited for
    all of it. A sweep now places at most _PLACE_PER_SWEEP; the turn that placed them
    claims some, and the next turn sweeps again."""
    monkeypatch.setattr(worker_module, "_PLACE_PER_SWEEP", 50)
    loop = in_process_loop(cpus=2)
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}}] * 120)
    try:
        loop._next_sweep = 0.0  # as when the submission's announcement arrives
        loop.step()
        statuses = list(Job.objects.filter(batch=batch).values_list("status", flat=True))
        assert statuses.count("SUBMITTED") == 70, statuses  # the rest waits for the next turns
        assert len([s for s in statuses if s not in ("SUBMITTED", "RUNNABLE")]) >= 2  # claimed in the same turn
        assert loop._next_sweep == 0.0
        drive(loop, all_finished(batch), timeout=60)
    finally:
        loop.stop()
    assert set(Job.objects.filter(batch=batch).values_list("status", flat=True)) == {"SUCCEEDED"}
