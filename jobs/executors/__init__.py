"""Executors: where attempts run. `BATCHES_EXECUTOR` names one: `local` (processes on
the worker's machine), `slurm` (a Slurm cluster), or the dotted path of any class that
implements `Executor` (tests use a fake cluster this way)."""

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from jobs.executors.base import AttemptSpec, Capacity, Executor, LaunchError, LiveAttempt, Outcome, Queued, Report, Started
from jobs.logs import MAX_CHUNK, read_log_file

__all__ = [
    "AttemptSpec",
    "Capacity",
    "Executor",
    "LaunchError",
    "LiveAttempt",
    "Outcome",
    "Queued",
    "Report",
    "Started",
    "get_executor_class",
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


def read_log(*, log_id: Any, offset: int = 0, limit: int = MAX_CHUNK) -> tuple[bytes, int]:
    """Bytes of the log from `offset` (at most `limit`), and the log's size now, as the
    configured executor serves them. A job that has not started yet has an empty log."""
    try:
        executor_class = get_executor_class()
    except ImproperlyConfigured:
        return read_log_file(log_id=log_id, offset=offset, limit=limit)
    return executor_class.read_log_of(log_id=str(log_id), offset=offset, limit=limit)
