"""Waking idle workers when there is news: new jobs, a retry, a cancel.

On PostgreSQL the services that create such news `NOTIFY` a channel inside their
transaction (delivered at commit), and each worker `LISTEN`s on a connection of its
own, whose socket its wait watches: a submission reaches an idle worker in milliseconds
instead of at its next poll. Elsewhere (SQLite, one machine) nothing is sent and
workers poll (BATCHES_WORKER_POLL_MS).
"""

import contextlib
import logging
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger("jobs.wakeup")

CHANNEL = "batches_work"
_RETRY_SECONDS = 5.0


def notify_work() -> None:
    """Tell listening workers to look now (at the commit of the caller's transaction)."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        return
    with conn.cursor() as cursor:
        cursor.execute(f"NOTIFY {CHANNEL}")


class WorkListener:
    """A LISTEN connection: `fileno()` becomes readable on news; `drain()` says whether
    there was any (and reconnects after an outage)."""

    def __init__(self) -> None:
        self._conn: Any = None
        self._retry_at = 0.0

    @classmethod
    def open(cls) -> "WorkListener | None":
        if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
            return None
        listener = cls()
        listener._connect()
        return listener

    def _connect(self) -> None:
        wrapper = connections[DEFAULT_DB_ALIAS]
        try:
            conn = wrapper.get_new_connection(wrapper.get_connection_params())
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:  # psycopg's errors: the database is away; poll meanwhile
            logger.warning("cannot listen for new work (%s); polling until it can", exc)
            self._conn, self._retry_at = None, time.monotonic() + _RETRY_SECONDS
            return
        self._conn = conn

    def fileno(self) -> int | None:
        if self._conn is None:
            return None
        try:
            return self._conn.pgconn.socket
        except Exception:
            return None

    def drain(self) -> bool:
        """True if news arrived since the last call (or the connection had to be made
        again, when news may have been missed)."""
        if self._conn is None:
            if time.monotonic() < self._retry_at:
                return False
            self._connect()
            return self._conn is not None
        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()
        except Exception:  # the connection broke: make it again, and look now
            self.close()
            self._retry_at = time.monotonic() + _RETRY_SECONDS
            return True
        news = False
        while pgconn.notifies() is not None:
            news = True
        return news

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
