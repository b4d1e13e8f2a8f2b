"""Waking idle workers when there is news: new jobs, a retry, a cancel.

On PostgreSQL the services that create such news `NOTIFY` a channel inside their
transaction (delivered at commit), and each worker `LISTEN`s on a connection of its
own, whose socket its wait watches: a submission reaches an idle worker in milliseconds
instead of at its next poll. With SQLite (every process on one machine) each worker
binds a datagram socket in `<BATCHES_WORK_DIR>/.wakeup/` and the services send one byte
to each after their commit. Workers poll as well (BATCHES_WORKER_POLL_MS), so news is
never missed, only late.
"""

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

logger = logging.getLogger("jobs.wakeup")

CHANNEL = "batches_work"
_RETRY_SECONDS = 5.0


def notify_work() -> None:
    """Tell listening workers to look now (at the commit of the caller's transaction)."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        transaction.on_commit(_poke_local_workers)
        return
    with conn.cursor() as cursor:
        cursor.execute(f"NOTIFY {CHANNEL}")


def _socket_folder() -> Path:
    return Path(settings.BATCHES_WORK_DIR) / ".wakeup"


def _poke_local_workers() -> None:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in _socket_folder().glob("*.sock"):
            try:
                sender.sendto(b"!", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # its worker is gone
            except OSError:
                continue  # its queue is full: it has news already


class LocalWorkListener:
    """The SQLite variant: a datagram socket of this worker's own."""

    def __init__(self) -> None:
        folder = _socket_folder()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{id(self)}.sock"
        self.path.unlink(missing_ok=True)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.path))
        self._socket.setblocking(False)

    def fileno(self) -> int | None:
        return self._socket.fileno()

    def drain(self) -> bool:
        news = False
        with contextlib.suppress(BlockingIOError):
            while self._socket.recv(16):
                news = True
        return news

    def close(self) -> None:
        self._socket.close()
        self.path.unlink(missing_ok=True)


class WorkListener:
    """A LISTEN connection: `fileno()` becomes readable on news; `drain()` says whether
    there was any (and reconnects after an outage)."""

    def __init__(self) -> None:
        self._conn: Any = None
        self._retry_at = 0.0

    @classmethod
    def open(cls) -> "WorkListener | LocalWorkListener | None":
        if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
            try:
                return LocalWorkListener()
            except OSError as exc:  # a path too long for a socket, a read-only folder...
                logger.warning("cannot listen for new work (%s); polling", exc)
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
