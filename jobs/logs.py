"""A job's combined stdout and stderr, as the rest of the service sees them: kept by the
configured executor's log store (`jobs.executors.log_store`; the shared log directory
for the built-in backends). Readers go through `jobs.executors.read_log`; deleting a
batch deletes its logs with `delete_logs`."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobs import executors


def log_path(log_id: Any) -> Path:
    """Where the configured executor's store keeps `log_id` (stores that are files)."""
    return executors.log_store().path(log_id)


def delete_logs(*, log_ids: Iterable[Any]) -> int:
    """Remove the logs of `log_ids` (those that exist) from the configured executor's
    store; returns how many."""
    return executors.delete_logs(log_ids=log_ids)
