"""The executor contract itself (jobs.executors.base): binding once, capabilities
declared, shutdown's deadline. Through a tiny in-memory executor: any backend is held
to the same."""

from collections.abc import Iterable
from typing import Self

import pytest

from jobs.executors import Adopts, get_executor_class
from jobs.executors.base import AlreadyBound, AttemptSpec, Capacity, Executor, Outcome, Report, WakeUp, wait


class Stubborn(Executor):
    """Attempts that never end, whatever is asked of them (a process stuck in the kernel)."""

    kind = "stubborn"

    @classmethod
    def from_settings(cls, *, cpus: int | None = None, memory_mib: int | None = None) -> Self:
        return cls()

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.forced: list[tuple[str, int]] = []

    def capacity(self) -> Capacity:
        return Capacity(1, 1)

    def free(self) -> Capacity:
        return Capacity(1, 1)

    def active(self) -> dict[str, int]:
        return dict(self.running)

    def submit(self, specs: list[AttemptSpec]) -> list[Report]:
        self.running.update({spec.job_id: spec.attempt for spec in specs})
        return []

    def wake_up(self) -> WakeUp:
        return WakeUp(within=0.01)

    def collect(self) -> list[Report]:
        return []

    def cancel(self, *, keys: Iterable[tuple[str, int]], reason: str, force: bool = False) -> None:
        if force:
            self.forced.extend(keys)

    def forget(self, keys: list[tuple[str, int]]) -> None:
        for job_id, _ in keys:
            self.running.pop(job_id, None)


def test_an_executor_is_bound_once():
    executor = Stubborn.from_settings()
    with pytest.raises(RuntimeError):
        executor.worker_id  # noqa: B018 (unbound: nothing may carry an empty id)
    executor.bind("w1")
    assert executor.worker_id == "w1"
    with pytest.raises(AlreadyBound):
        executor.bind("w2")
    successor = executor.successor()
    assert not successor.bound and type(successor) is Stubborn


def test_constructors_take_keywords_only():
    with pytest.raises(TypeError):
        get_executor_class("local")(2)


def test_attempts_that_survive_their_worker_must_be_adoptable():
    with pytest.raises(TypeError, match="Adopts"):

        class Leaky(Stubborn):
            attempts_survive_worker = True

    class Adopting(Stubborn, Adopts):
        attempts_survive_worker = True

        def adopt(self, attempts):
            return []

    assert Adopting.attempts_survive_worker


def test_shutdown_gives_up_after_its_deadline(monkeypatch):
    """Asked, then forced after the grace, then given up on: reported ended, not charged."""
    monkeypatch.setattr("jobs.executors.base.FORCE_WAIT", 0.1)
    executor = Stubborn()
    executor.submit([AttemptSpec("j1", "b", 1, "l", ["/bin/true"], 1, 1, 1)])
    outcomes = executor.shutdown(grace=0.1)
    assert executor.forced == [("j1", 1)]
    assert outcomes == [
        Outcome(
            "j1",
            1,
            succeeded=False,
            reason="worker stopped; did not stop within 0.1 s of being killed",
            reason_code="worker_stopped",
        )
    ]
    assert not outcomes[0].charged, "an infrastructure end uses up no attempt"
    assert executor.active() == {}


def test_wait_returns_what_became_readable():
    import os

    read_end, write_end = os.pipe()
    try:
        assert wait(WakeUp(), timeout=0.01, fds=[read_end]) == set()
        os.write(write_end, b"x")
        assert wait(WakeUp(), timeout=5, fds=[read_end]) == {read_end}
    finally:
        os.close(read_end)
        os.close(write_end)
