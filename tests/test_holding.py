"""Holding (LocalExecutor.hold, `jobs.executors.base.Holds`): an attempt handed over
beyond the free capacity, held by a launcher to start the moment a running attempt of
the same shape is reaped, in its place, without waiting for the worker loop. Real
processes and launchers throughout: the executor alone, and through the worker loop."""

import os
import signal
import time

import pytest

from core import reason_codes
from jobs.executors import local_attempt
from jobs.executors.base import AttemptSpec, Capacity, Outcome, Returned, Started
from jobs.executors.launcher import LOST
from jobs.models import Attempt, Job
from tests.test_launcher import executor_in, parent_of
from tests.worker_helpers import all_finished, drive, in_process_loop, make_batch, script_tool

CORES = "grep Cpus_allowed_list /proc/self/status"


def spec(name: str, argv: list[str], *, attempt: int = 1, memory: int = 256) -> AttemptSpec:
    return AttemptSpec(name, "b", attempt, f"log-{name}", argv, 1, memory, 60)


def by_kind(reports: list) -> dict[tuple[type, str], object]:
    keyed = {}
    for report in reports:
        job_id = report.spec.job_id if isinstance(report, Returned) else report.job_id
        assert (type(report), job_id) not in keyed, f"reported twice: {report}"
        keyed[(type(report), job_id)] = report
    return keyed


def outcomes(count: int):
    return lambda got: sum(isinstance(report, Outcome | Returned) for report in got) >= count


@pytest.fixture
def executor(tmp_path, settings):
    settings.BATCHES_LOG_DIR = tmp_path / "logs"
    executor = executor_in(tmp_path)
    yield executor
    executor.shutdown(grace=1)


def log_of(executor, name: str) -> str:
    path = executor.log_store.path(f"log-{name}")
    return path.read_text() if path.exists() else ""


def test_a_held_attempt_starts_in_its_predecessors_place_when_that_one_ends_without_the_loop(executor, monkeypatch):
    """Nobody collects for 0.3 s, yet the held attempt starts within milliseconds of its
    predecessor's end (both clocks are the launcher's), on the same core, and the pair
    never counts as more than one slot."""
    monkeypatch.setattr(local_attempt, "HOLD_SECONDS", 5.0)  # a loaded machine's slow sh is not asked back
    assert executor.submit([spec("j1", ["/bin/sh", "-c", f"sleep 0.02; {CORES}"])]) == []
    # One running attempt: one can be held; the next has nothing to wait behind.
    assert executor.hold([spec("j2", ["/bin/sh", "-c", CORES]), spec("j3", ["/bin/true"])]) == 1
    assert executor.free() == Capacity(1, 4096 - 256)
    assert executor.active() == {"j1": 1, "j2": 1}
    time.sleep(0.3)
    got = by_kind(executor.collect_within(10, until=outcomes(2)))
    assert set(got) == {(Started, "j1"), (Outcome, "j1"), (Started, "j2"), (Outcome, "j2")}
    first_end, second_start = got[(Outcome, "j1")].time, got[(Started, "j2")].time
    assert 0 <= second_start - first_end < 0.05, (first_end, second_start)
    assert got[(Outcome, "j1")].succeeded and got[(Outcome, "j2")].succeeded
    assert log_of(executor, "j1") == log_of(executor, "j2") != ""
    assert executor.free() == Capacity(2, 4096) and executor.active() == {}


def test_one_held_behind_an_attempt_that_runs_on_is_given_back_leaving_no_trace(executor, tmp_path):
    assert executor.submit([spec("j1", ["/bin/sleep", "30"])]) == []
    assert executor.hold([spec("j2", ["/bin/true"], attempt=2)]) == 1
    got = by_kind(executor.collect_within(10, until=outcomes(1)))
    assert set(got) == {(Started, "j1"), (Returned, "j2")}
    assert got[(Returned, "j2")].spec == spec("j2", ["/bin/true"], attempt=2)
    assert log_of(executor, "j2") == ""  # its "--- attempt 2 ---" line is taken back
    assert not (tmp_path / "work" / "j2.2").exists()
    assert executor.active() == {"j1": 1} and executor.free() == Capacity(1, 4096 - 256)
    # It is the worker's again, and starts as any attempt does.
    executor.submit([spec("j2", ["/bin/true"], attempt=2)])
    got = by_kind(executor.collect_within(10, until=outcomes(1)))
    assert got[(Outcome, "j2")].succeeded
    assert log_of(executor, "j2") == "--- attempt 2 ---\n"


def test_an_old_attempt_gets_nothing_held_behind_it(executor, monkeypatch):
    """An attempt that has run HOLD_SECONDS is no short job: the next one would wait."""
    monkeypatch.setattr(local_attempt, "HOLD_SECONDS", 0.2)
    executor.submit([spec("j1", ["/bin/sleep", "30"])])
    time.sleep(0.3)
    assert executor.hold([spec("j2", ["/bin/true"])]) == 0
    assert executor.active() == {"j1": 1}


def test_a_held_attempt_that_is_cancelled_ends_without_having_started(executor):
    executor.submit([spec("j1", ["/bin/sleep", "30"])])
    assert executor.hold([spec("j2", ["/bin/true"])]) == 1
    executor.cancel(keys=[("j2", 1)], reason="cancelled by its owner")
    got = by_kind(executor.collect_within(10, until=outcomes(1)))
    assert set(got) == {(Started, "j1"), (Outcome, "j2")}
    outcome = got[(Outcome, "j2")]
    assert (outcome.succeeded, outcome.reason, outcome.reason_code) == (False, "cancelled by its owner", reason_codes.CANCELLED)
    assert outcome.usage is None and log_of(executor, "j2") == ""
    assert executor.active() == {"j1": 1}


def test_one_held_behind_an_attempt_that_could_not_start_is_given_back_and_the_slot_counted_once(executor, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    executor.submit([spec("j1", [str(garbage)])])
    assert executor.hold([spec("j2", ["/bin/true"])]) == 1  # j1's answer has not come yet
    got = by_kind(executor.collect_within(10, until=outcomes(2)))
    assert set(got) == {(Outcome, "j1"), (Returned, "j2")}
    assert got[(Outcome, "j1")].reason_code == reason_codes.LAUNCH_FAILED
    assert executor.active() == {} and executor.free() == Capacity(2, 4096)


def test_a_held_attempt_whose_launcher_dies_ends_as_lost_and_not_charged(executor):
    executor.submit([spec("j1", ["/bin/sleep", "30"])])
    assert executor.hold([spec("j2", ["/bin/true"])]) == 1
    started = by_kind(executor.collect_within(10, until=bool))[(Started, "j1")]
    os.kill(parent_of(int(started.external_id)), signal.SIGKILL)
    got = by_kind(executor.collect_within(10, until=outcomes(2)))
    assert got[(Outcome, "j1")].reason == LOST
    held = got[(Outcome, "j2")]
    assert held.reason_code == reason_codes.INTERNAL_ERROR and not held.charged
    assert "launcher process ended before it answered" in held.reason
    assert executor.active() == {} and executor.free() == Capacity(2, 4096)


def test_sealed_or_different_attempts_are_not_held(executor):
    executor.submit([spec("j1", ["/bin/sleep", "30"])])
    assert executor.hold([spec("j2", ["/bin/true"], memory=512)]) == 0  # another launcher's
    assert executor.hold([spec("j2", ["/bin/true"], memory=64)]) == 0  # through prlimit
    assert executor.hold([spec("j2", ["/no/such/program"])]) == 0  # left to submit, which says why
    assert executor.active() == {"j1": 1}


@pytest.mark.django_db
def test_short_jobs_through_the_loop_go_from_one_to_the_next_in_their_slots(alice, catalog, monkeypatch):
    """Through the worker loop, most of a stream of short jobs are held; each job still
    runs exactly once, with one attempt, and its start is recorded where the launcher
    started it."""
    monkeypatch.setattr(local_attempt, "HOLD_SECONDS", 1.0)  # a loaded machine's jobs are slower
    loop = in_process_loop(cpus=2)
    held = []
    hold = loop.executor.hold
    monkeypatch.setattr(loop.executor, "hold", lambda specs: held.append(hold(specs)) or held[-1])
    try:
        batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}}] * 200, memory=256)
        drive(loop, all_finished(batch), timeout=60)
    finally:
        loop.stop()
    assert Job.objects.filter(batch=batch, status="SUCCEEDED").count() == 200
    assert Attempt.objects.filter(job__batch=batch).count() == 200
    assert sum(held) >= 20, held
    for start, end, elapsed in Attempt.objects.filter(job__batch=batch).values_list("start_time", "end_time", "elapsed_seconds"):
        assert start is not None and end is not None and start <= end
        assert elapsed is not None and elapsed < 5


@pytest.mark.django_db
def test_a_job_held_ahead_counts_as_claimed_ahead(alice, catalog):
    """A worker of 1 cpu that has just run 5 short jobs claims one job ahead of its next
    ones (5 ends in the last second, over the 0.25 s horizon). Held behind the running
    one, that job vanished from the worker's count of what it had claimed ahead, and the
    worker claimed one more: all three long jobs STARTING or RUNNING, none left to
    other workers."""
    loop = in_process_loop(cpus=1)
    try:
        short = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}}] * 5)
        drive(loop, all_finished(short))
        long = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 30"}}] * 3)
        drive(loop, lambda: Job.objects.filter(batch=long, status="RUNNING").exists())
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            loop.step()
        statuses = sorted(Job.objects.filter(batch=long).values_list("status", flat=True))
    finally:
        loop.stop()
    assert statuses == ["RUNNABLE", "RUNNING", "STARTING"]
