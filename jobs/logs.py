"""Where a job's combined stdout and stderr live, and reading them back.

Executors write `<BATCHES_LOG_DIR>/<log_id>.log`; the web server reads the same path,
so the log directory must be shared with the machines that run jobs. Readers go through
`jobs.executors.read_log`, which asks the configured executor.
"""

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings

# One response carries at most this much of a log; `?offset=` reads on from there.
MAX_CHUNK = 8 * 1024 * 1024


def log_path(log_id: Any) -> Path:
    return settings.BATCHES_LOG_DIR / f"{log_id}.log"


def read_log_file(*, log_id: Any, offset: int = 0, limit: int = MAX_CHUNK) -> tuple[bytes, int]:
    """Bytes of the log from `offset` (at most `limit`) in the shared log directory
    (what every executor writes to), and its size now."""
    path = log_path(log_id)
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(min(offset, size))
            return handle.read(limit), size
    except FileNotFoundError:
        return b"", 0


def delete_logs(*, log_ids: Iterable[Any]) -> int:
    """Remove the log files of `log_ids` (those that exist); returns how many."""
    removed = 0
    for log_id in log_ids:
        with contextlib.suppress(FileNotFoundError):
            log_path(log_id).unlink()
            removed += 1
    return removed
