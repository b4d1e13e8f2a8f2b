"""Tasks: one-job batches whose job runs steps of the caller's own commands (a GA4GH TES
task, `ga4gh/`), not a catalog tool's. The steps, inputs and outputs are kept on the
batch (`Batch.task`); a local worker's task runner runs them, each step sealed in a
sandbox of its own (`jobs.executors.task_spec`). Everything else is a job's: fair
share, accounting, events, cancel, the admin.

The task, as `submit_task` takes it (paths are inside the container, absolute, normal):
    {"steps": [{"command": [...], "root": dir or None, "workdir", "stdin", "stdout",
                "stderr", "env": {...}, "ignore_error": bool}, ...],
     "inputs": [{"path", "type": "FILE"|"DIRECTORY", and one of "content",
                 "source" (a host path inside a filesystem of the caller's) or "error"
                 (why it cannot be fetched: the task fails there), "url"}, ...],
     "outputs": [{"path", "type", "url", "destination" (a host path inside a writable
                  filesystem of the caller's) or "error", "path_prefix",
                  "pattern_root" (for a path with wildcards)}, ...],
     "volumes": ["/vol/a", ...]}
"""

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction

from accounts.capabilities import may_run_commands
from batches.models import Batch, Filesystem, Tool
from jobs.services import create_jobs
from jobs.wakeup import notify_work

TASK_TOOL = "task"


def task_tool() -> Tool:
    """The catalog entry every task's batch names: disabled, so it is in no tool list
    and no ordinary submission can use it."""
    tool, _ = Tool.objects.get_or_create(
        name=TASK_TOOL,
        defaults={"command": ["(a task's own steps)"], "enabled": False, "description": "A GA4GH TES task's steps (jobs.tasks)."},
    )
    return tool


def submit_task(
    *,
    user: AbstractBaseUser,
    name: str,
    cpu: int,
    memory_mib: int,
    task: dict[str, Any],
    filesystems: list[Filesystem],
    timeout_seconds: int | None = None,
) -> Batch:
    """A one-job batch of `user`'s that runs `task` (see the module), checked by the
    caller (`ga4gh.services`). PermissionDenied unless the user may run commands of
    their own (`accounts.capabilities`). `filesystems` are those its inputs and
    outputs use, recorded on the batch."""
    if not may_run_commands(user):
        raise PermissionDenied(
            "you may not run commands of your own: an operator grants it (python manage.py allow_commands USER, or the admin)"
        )
    with transaction.atomic():
        batch = Batch.objects.create(
            owner=user,
            name=name,
            tool=task_tool(),
            command=[],
            arg_types={},
            cpu=cpu,
            memory=memory_mib,
            n_jobs=1,
            max_attempts=1,
            timeout_seconds=timeout_seconds or settings.BATCHES_DEFAULT_TIMEOUT_SECONDS,
            task=task,
        )
        batch.filesystems.set(filesystems)
        create_jobs(batch=batch, arguments=[{}])
        notify_work()
    return batch
