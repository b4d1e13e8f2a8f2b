"""One batch followed through the event feed (GET /events), for `batches watch`: told
of each change by long polls rather than asking for the batch's counts every second.

The order of the first reads is what makes it whole: the feed's head first (where it
stands now), then the batch's counts, then every event after the head. An event written
between the head and the counts is then read from the feed, never lost; a
`batch.finished` among them ends the watch. The price is that such an event may be in
the counts already and be counted again: a count never goes below zero for it (the event
is then passed over), the counts are read afresh whenever the batch has been quiet for
QUIET seconds, and the last counts, which decide the exit status, are `batch.finished`'s
own, read by the server when the batch ended.
"""

import time
from typing import Any

from client.api import Api, ApiError
from client.common import STATES

# An `after` past every id: the answer is empty and its X-Events-Through is the head.
LARGEST_ID = 2**63 - 1
# Seconds a long poll waits on the server for news (the server caps it at 60, or lower).
WAIT = 25
# Seconds without an event of the batch before its counts are read again: corrects an
# event counted twice (see the module), and ends a watch whose batch was deleted (404,
# as polling said) or ended without a `batch.finished` reaching this user.
QUIET = 25
PAGE = 1000


def all_ended(counts: dict[str, int]) -> bool:
    return counts["succeeded"] + counts["failed"] >= sum(counts.values())


def moved(counts: dict[str, int], event: dict[str, Any]) -> None:
    """`counts` moved by one job event: one job out of `from_status`, into `to_status`.
    Passed over when no job is counted in `from_status` (an event the counts held
    already, see the module), so the total stays the batch's."""
    source, target = (event["from_status"] or "").lower(), (event["to_status"] or "").lower()
    if target in counts and counts.get(source, 0) > 0:
        counts[source] -= 1
        counts[target] += 1


class BatchFeed:
    """The feed from a cursor, read for one batch: `look()` waits for the next events
    and gives the batch's counts moved by them; `finished` once its `batch.finished`
    (or a fresh read of its counts) says every job ended."""

    def __init__(self, api: Api, batch: str, *, cursor: int, every: float) -> None:
        self.api, self.batch, self.cursor, self.every = api, batch, cursor, every
        self.finished = False
        self.requests = 0
        self._heard = time.monotonic()

    @classmethod
    def at_head(cls, api: Api, batch: str, *, every: float) -> "BatchFeed | None":
        """Following from where the feed stands now; None from a server without the
        feed (404 on /events, a release before it), whose caller polls instead."""
        try:
            response = api.request("GET", "/events", params={"after": LARGEST_ID, "limit": 1})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        through = response.headers.get("X-Events-Through", "")
        if not through.isdigit() or int(through) >= LARGEST_ID:
            return None  # a feed that does not say where it stands cannot be started safely
        return cls(api, batch, cursor=int(through), every=every)

    def look(self, counts: dict[str, int]) -> dict[str, int]:
        """One long poll: the counts after the batch's events in it, `batch.finished`'s
        own when it comes. At most one request per `every` seconds while events come
        (of this batch or the user's others), one per WAIT seconds while none do."""
        asked = time.monotonic()
        response = self.api.request("GET", "/events", params={"after": self.cursor, "limit": PAGE, "wait": WAIT})
        self.requests += 1
        page = self.api.json(response)
        counts = dict(counts)
        for event in page:
            self.cursor = event["id"]
            if event["batch_id"] != self.batch:
                continue
            self._heard = time.monotonic()
            if event["type"] == "batch.finished":
                self.finished = True
                return {state: int((event.get("counts") or {}).get(state, 0)) for state in STATES}
            moved(counts, event)
        through = response.headers.get("X-Events-Through", "")
        if through.isdigit() and int(through) > self.cursor:
            self.cursor = int(through)  # past other users' events: the cursor stays within the retention
        if time.monotonic() - self._heard >= QUIET:
            counts = self.api.get(f"/batches/{self.batch}")
            self.requests += 1
            self._heard = time.monotonic()
            self.finished = all_ended(counts)
        if len(page) < PAGE and not self.finished:
            # A page with news, or a server that answers before `wait` (its
            # BATCHES_EVENTS_MAX_WAIT is lower): the next look waits its turn.
            time.sleep(max(0.0, self.every - (time.monotonic() - asked)))
        return counts
