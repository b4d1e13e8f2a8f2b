"""Executors: where attempts run. `BATCHES_EXECUTOR` chooses one (`local` today;
`slurm` is the next backend and implements the same `Executor` interface)."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from jobs.executors.base import Attempt, Capacity, Executor, LaunchError, Outcome

__all__ = ["Attempt", "Capacity", "Executor", "LaunchError", "Outcome", "get_executor_class"]


def get_executor_class() -> type[Executor]:
    """The executor class named by settings.BATCHES_EXECUTOR."""
    if settings.BATCHES_EXECUTOR == "local":
        from jobs.executors.local import LocalExecutor

        return LocalExecutor
    raise ImproperlyConfigured(f"the {settings.BATCHES_EXECUTOR!r} executor is not implemented yet")
