"""Where attempts' logs are kept: each executor names its store (`Executor.log_store`),
and everything that reads, sizes or deletes a log goes through the configured
executor's store (`jobs.executors.read_log`, `jobs.executors.delete_logs`).

`LogStore` is the shared log directory: `<BATCHES_LOG_DIR>/<log_id>.log`, written by the
worker (local attempts) or by the nodes (cluster tasks) and read by the web server, so
the directory must be shared with the machines that run jobs. A backend that keeps logs
elsewhere (an object store, the scheduler's own) subclasses it.
"""

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings

# One response carries at most this much of a log; `?offset=` reads on from there.
MAX_CHUNK = 8 * 1024 * 1024


class LogStore:
    """The shared log directory (`BATCHES_LOG_DIR`, read when used: tests change it)."""

    @property
    def directory(self) -> Path:
        return Path(settings.BATCHES_LOG_DIR)

    def path(self, log_id: Any) -> Path:
        """Where the attempts of `log_id` write (for executors whose attempts write files)."""
        return self.directory / f"{log_id}.log"

    def read(self, *, log_id: Any, offset: int = 0, limit: int = MAX_CHUNK) -> tuple[bytes, int]:
        """Bytes of the log from `offset` (at most `limit`), and its size now; a log not
        written yet is empty."""
        try:
            with self.path(log_id).open("rb") as handle:
                size = handle.seek(0, 2)
                handle.seek(min(offset, size))
                return handle.read(limit), size
        except FileNotFoundError:
            return b"", 0

    def size(self, *, log_id: Any) -> int:
        try:
            return self.path(log_id).stat().st_size
        except FileNotFoundError:
            return 0

    def delete(self, *, log_ids: Iterable[Any]) -> int:
        """Remove the logs of `log_ids` (those that exist); returns how many."""
        removed = 0
        for log_id in log_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(log_id).unlink()
                removed += 1
        return removed
