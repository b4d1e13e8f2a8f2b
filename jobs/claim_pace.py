"""How far ahead a local worker claims (`jobs.worker`): as many jobs as its slots will
start within a short horizon, judged from how fast its attempts have been ending.

Claiming ahead keeps the local queue from running dry between two claims when jobs are
short (a claim is a transaction on the writer's thread, tens of milliseconds), and
claiming no further keeps the rest for other workers and fair share's next turn.
"""

import time
from collections import deque

from jobs.executors.base import Outcome

# Claim ahead at most this many jobs beyond the free capacity, and about as many as end
# in this many seconds at the rate they have been ending.
PREFETCH_MAX = 256
PREFETCH_HORIZON = 0.25
# Until a second of ends has been seen, the rate is also judged from the length of the
# jobs that ended (a moving average): a slot turns over once per job, plus about this
# much for its spawn, reap and the loop's turn. Without it a stream of short jobs ramped
# up over a whole second, claiming a few at a time because few had ended.
SLOT_TURN_SECONDS = 0.002
JOB_SECONDS_WEIGHT = 0.2  # of each newly ended job in the average
# The length says nothing of jobs to come once ends stop coming at about that pace (the
# next batch's jobs may be long): it counts only while the last end is at most two
# turns and this much old.
STALE_AFTER = 0.02


class ClaimPace:
    """The ends seen over the last second and the recent jobs' length."""

    def __init__(self) -> None:
        self._ended: deque[tuple[float, int]] = deque()  # (monotonic time, attempts ended)
        self._ended_total = 0
        self._job_seconds: float | None = None  # moving average of the ended jobs' run time

    def ended(self, outcomes: list[Outcome], *, now: float) -> None:
        if not outcomes:
            return
        self._ended.append((now, len(outcomes)))
        self._ended_total += len(outcomes)
        for outcome in outcomes:
            seconds = outcome.usage.elapsed_seconds if outcome.usage is not None else None
            if seconds is None:
                continue
            if self._job_seconds is None:
                self._job_seconds = seconds
            else:
                self._job_seconds += JOB_SECONDS_WEIGHT * (seconds - self._job_seconds)

    def ended_since(self, moment: float) -> bool:
        """Some attempt ended after `moment` (monotonic)."""
        return bool(self._ended) and self._ended[-1][0] > moment

    def ahead(self, *, slots: int) -> int:
        """How many jobs to hold beyond what runs now: as many as end within the horizon
        at the recent rate, or, while ends keep coming, at the rate `slots` turn over at
        the recent jobs' length, whichever is higher (none while jobs are long)."""
        now = time.monotonic()
        while self._ended and self._ended[0][0] < now - 1.0:
            self._ended_total -= self._ended.popleft()[1]
        rate = float(self._ended_total)  # per second
        if self._job_seconds is not None and self._ended:
            turn = self._job_seconds + SLOT_TURN_SECONDS
            if now - self._ended[-1][0] <= 2 * turn + STALE_AFTER:
                rate = max(rate, slots / turn)
        return min(PREFETCH_MAX, int(rate * PREFETCH_HORIZON))
