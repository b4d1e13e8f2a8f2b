"""Executors: where attempts run. `BATCHES_EXECUTOR` names one: `local` (processes on
the worker's machine), `slurm` (a Slurm cluster), or the dotted path of any class that
implements `Executor` (tests use a fake cluster this way)."""

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from jobs.executors.base import (
    Adopts,
    AttemptSpec,
    Capacity,
    Executor,
    LaunchError,
    LiveAttempt,
    Outcome,
    Probes,
    Queued,
    Recovers,
    Report,
    Started,
)
from jobs.executors.log_store import MAX_CHUNK, LogStore

__all__ = [
    "Adopts",
    "AttemptSpec",
    "Capacity",
    "Executor",
    "LaunchError",
    "LiveAttempt",
    "Outcome",
    "Probes",
    "Queued",
    "Recovers",
    "Report",
    "Started",
    "delete_logs",
    "get_executor_class",
    "log_store",
    "read_log",
]

BUILTIN = {
    "local": "jobs.executors.local.LocalExecutor",
    "slurm": "jobs.executors.slurm.SlurmExecutor",
}


def get_executor_class(name: str | None = None) -> type[Executor]:
    """The executor class named by `name` (default settings.BATCHES_EXECUTOR)."""
    name = name or settings.BATCHES_EXECUTOR
    path = BUILTIN.get(name, name)
    try:
        executor_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"BATCHES_EXECUTOR {name!r}: cannot import {path}: {exc}") from exc
    if not (isinstance(executor_class, type) and issubclass(executor_class, Executor)):
        raise ImproperlyConfigured(f"BATCHES_EXECUTOR {name!r}: {path} is not an Executor class")
    return executor_class


def log_store() -> LogStore:
    """The log store of the configured executor (the shared log directory when the
    setting names no usable executor: a web server without a backend still serves logs)."""
    try:
        return get_executor_class().log_store
    except ImproperlyConfigured:
        return LogStore()


def read_log(*, log_id: Any, offset: int = 0, limit: int = MAX_CHUNK) -> tuple[bytes, int]:
    """Bytes of the log from `offset` (at most `limit`), and the log's size now, from the
    configured executor's log store. A job that has not started yet has an empty log."""
    return log_store().read(log_id=str(log_id), offset=offset, limit=limit)


def delete_logs(*, log_ids: Iterable[Any]) -> int:
    """Remove the logs of `log_ids` from the configured executor's store; how many."""
    return log_store().delete(log_ids=[str(log_id) for log_id in log_ids])
