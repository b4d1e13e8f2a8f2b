"""A thread for the worker loop's writes, so that its executor keeps starting attempts
while the database writes what happened and claims what comes next.

With short jobs the loop's writes took about a third of its time, during which no
attempt started and no end was collected: slots stood empty for the length of a
transaction. The loop now hands each write to `DatabaseWriter` and goes on with the
executor until the write is over (`WorkerLoop._write`).

The thread uses the loop's own connection, never a second one: a write and the loop's
other statements (heartbeats, checks, sweeps) stay in one session, and a caller's
transaction (a test's) is the same for both. One thread at a time uses it: the loop
touches the database only when no write is in flight, and returns from a step only once
its write is over. The executor never touches the database (nothing in
`jobs.executors` imports a model), which is what lets it run meanwhile.
"""

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections

T = TypeVar("T")


def _use_connection(connection: Any) -> None:
    # In the writer's thread, the default alias is the loop's connection (as Django's
    # own LiveServerThread shares the test connection).
    connections[DEFAULT_DB_ALIAS] = connection


class DatabaseWriter:
    """Runs functions that use the database on one thread of its own, one at a time,
    with the calling thread's default connection. `fileno()` becomes readable when a
    write is over (`acknowledge()` reads it again). `close()` when done."""

    def __init__(self) -> None:
        self._connection = connections[DEFAULT_DB_ALIAS]
        self._connection.inc_thread_sharing()
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="db-write", initializer=_use_connection, initargs=(self._connection,)
        )
        self._done = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def submit(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start `function(*args, **kwargs)` on the writer's thread. The caller must not
        use the database until the returned future is done."""
        return self._pool.submit(self._run, function, *args, **kwargs)

    def _run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            # Before the future is done (a done-callback would run after): once it is
            # done, `acknowledge()` is sure to find the signal and clear it, and the
            # next write's wait does not wake at once for this one.
            os.eventfd_write(self._done, 1)

    def fileno(self) -> int:
        return self._done

    def acknowledge(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._done)

    def close(self) -> None:
        """Wait for the write in flight, if any, and stop the thread."""
        self._pool.shutdown(wait=True)
        self._connection.dec_thread_sharing()
        os.close(self._done)
