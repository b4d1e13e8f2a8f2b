"""Executors: where attempts run. `BATCHES_EXECUTOR` names one: `local` (processes on
the worker's machine), `slurm` (a Slurm cluster), or the dotted path of any class that
implements `Executor` (tests use a fake cluster this way)."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from jobs.executors.base import AttemptSpec, Capacity, Executor, LaunchError, LiveAttempt, Outcome, Queued, Report, Started

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
