"""A submission checked against the catalog (tools, limits, filesystems, arguments), and
idempotency keys. Creating the batch and its jobs is jobs/submission.py's."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from batches.models import Batch, BatchDependency, Filesystem, IdempotencyKey, Tool
from batches.parameters import JOB_ARGS, ArgumentsInvalid, resolve_arguments
from batches.retry_rules import check_retry_rules
from batches.selectors import granted_filesystems, visible_tools

# A submission lists at most this many argument errors; past that, more are noise.
_MAX_REPORTED_ERRORS = 50
# A batch waits for at most this many others.
MAX_DEPENDENCIES = 20


@dataclass(frozen=True)
class CheckedSubmission:
    """What a submission names, found and checked: its tool, its filesystems, and each
    job's arguments resolved against the tool's parameters."""

    tool: Tool
    filesystems: list[Filesystem]
    arguments: list[dict[str, str]]
    # (batch depended on, condition), in the order the submission lists them.
    dependencies: list[tuple[Batch, str]]
    retry_rules: list[dict[str, Any]]


def check_submission(
    *,
    user: AbstractBaseUser,
    tool_id: Any,
    cpu: int,
    memory: int,
    filesystem_ids: Sequence[Any],
    jobs: Sequence[dict[str, Any]],
    max_attempts: int,
    timeout_seconds: int | None,
    priority: int = 0,
    max_running: int | None = None,
    depends_on: Sequence[dict[str, Any]] = (),
    retry_rules: Sequence[dict[str, Any]] = (),
) -> CheckedSubmission:
    """Check a submission against the catalog, in this order:
    - the tool exists and is enabled (400 on `tool_id`);
    - cpu, memory, attempts and timeout are within the configured maxima (400);
    - priority is within +-PRIORITY_BOUND and max_running within 1..MAX_RUNNING_BOUND (400);
    - each filesystem exists (400) and is granted to the user (PermissionDenied, 403);
    - each job's `args` match the tool's parameters (400 naming `jobs[i].args.name`);
    - each of `depends_on` (`{"batch_id", "condition"}`) names a batch of the user's,
      undeleted, listed once (400 naming `depends_on[i].batch_id`; see
      `check_dependencies`);
    - the retry rules are well formed (400 naming `retry.rules[i]...`; see
      `batches.retry_rules.check_retry_rules`).
    Writes nothing."""
    tool = visible_tools().filter(pk=tool_id).first()
    if tool is None:
        raise ValidationError({"tool_id": [f"no tool with id {tool_id}"]})
    _check_limits(tool=tool, cpu=cpu, memory=memory, n_jobs=len(jobs), max_attempts=max_attempts, timeout_seconds=timeout_seconds)
    _check_order(priority=priority, max_running=max_running)
    filesystems = _check_filesystems(user=user, filesystem_ids=filesystem_ids)
    arguments = _check_arguments(tool=tool, jobs=jobs, roots=[fs.path for fs in filesystems])
    dependencies = check_dependencies(user=user, depends_on=depends_on)
    rules = check_retry_rules(rules=list(retry_rules))
    return CheckedSubmission(tool=tool, filesystems=filesystems, arguments=arguments, dependencies=dependencies, retry_rules=rules)


def check_dependencies(*, user: AbstractBaseUser, depends_on: Sequence[dict[str, Any]]) -> list[tuple[Batch, str]]:
    """The batches a new batch of `user`'s waits for, found: `depends_on` is a list of
    `{"batch_id", "condition"}`, condition "succeeded" or "ended". At most
    MAX_DEPENDENCIES, each batch once, each one of the user's own undeleted batches.
    Another user's batch is refused exactly as an unknown id is ("no batch with id
    ..."), so a submission never tells whether someone else's batch exists.

    No cycle can be made: a batch can only depend on batches that exist before it (its
    own id is made when it is written, after this check), so following dependencies
    always goes back in time. Returns (batch, condition) in the order given."""
    if len(depends_on) > MAX_DEPENDENCIES:
        raise ValidationError({"depends_on": [f"must list at most {MAX_DEPENDENCIES} batches, not {len(depends_on)}"]})
    conditions = set(BatchDependency.Condition.values)
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    for index, dependency in enumerate(depends_on):
        batch_id = _canonical_id(dependency["batch_id"])
        if batch_id and batch_id in seen:
            errors[f"depends_on[{index}].batch_id"] = [f"batch {batch_id} is listed twice"]
        seen.add(batch_id)
        if dependency["condition"] not in conditions:
            errors[f"depends_on[{index}].condition"] = [f"must be one of: {', '.join(sorted(conditions))}"]
    if errors:
        raise ValidationError(errors)
    found = {str(batch.pk): batch for batch in Batch.objects.filter(owner=user, deleted_at__isnull=True, pk__in=[s for s in seen if s])}
    missing = {
        f"depends_on[{index}].batch_id": [f"no batch with id {dependency['batch_id']}"]
        for index, dependency in enumerate(depends_on)
        if _canonical_id(dependency["batch_id"]) not in found
    }
    if missing:
        raise ValidationError(missing)
    return [(found[_canonical_id(dependency["batch_id"])], dependency["condition"]) for dependency in depends_on]


def _canonical_id(value: Any) -> str:
    """A batch id as the database's uuid prints it; "" for what is no uuid (found
    nowhere)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return ""


def forget_idempotency_keys(*, now: datetime | None = None) -> int:
    """Delete keys older than IdempotencyKey.KEEP_HOURS; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(hours=IdempotencyKey.KEEP_HOURS)
    return IdempotencyKey.objects.filter(created__lt=cutoff).delete()[0]


# A batch's priority is between -PRIORITY_BOUND and PRIORITY_BOUND.
PRIORITY_BOUND = 1_000_000
# A batch's max_running is at most this (no machine or cluster runs more of one batch at
# once; the column is a 32-bit integer).
MAX_RUNNING_BOUND = 1_000_000


def _check_order(*, priority: int, max_running: int | None) -> None:
    errors: dict[str, list[str]] = {}
    if not -PRIORITY_BOUND <= priority <= PRIORITY_BOUND:
        errors["priority"] = [f"must be between {-PRIORITY_BOUND} and {PRIORITY_BOUND}, not {priority}"]
    if max_running is not None and not 1 <= max_running <= MAX_RUNNING_BOUND:
        errors["max_running"] = [f"must be between 1 and {MAX_RUNNING_BOUND} (or null: no limit), not {max_running}"]
    if errors:
        raise ValidationError(errors)


def _check_limits(*, tool: Tool, cpu: int, memory: int, n_jobs: int, max_attempts: int, timeout_seconds: int | None) -> None:
    errors: dict[str, list[str]] = {}
    if not 1 <= cpu <= settings.BATCHES_MAX_CPU:
        errors["hardware.cpu"] = [f"must be between 1 and {settings.BATCHES_MAX_CPU} cores, not {cpu}"]
    if not 1 <= memory <= settings.BATCHES_MAX_MEMORY_MIB:
        errors["hardware.memory"] = [f"must be between 1 and {settings.BATCHES_MAX_MEMORY_MIB} MiB, not {memory}"]
    if not 1 <= n_jobs <= settings.BATCHES_MAX_JOBS_PER_BATCH:
        errors["jobs"] = [f"must list between 1 and {settings.BATCHES_MAX_JOBS_PER_BATCH} jobs, not {n_jobs}"]
    if not 1 <= max_attempts <= settings.BATCHES_MAX_ATTEMPTS:
        errors["max_attempts"] = [f"must be between 1 and {settings.BATCHES_MAX_ATTEMPTS}, not {max_attempts}"]
    if timeout_seconds is not None and not 1 <= timeout_seconds <= settings.BATCHES_MAX_TIMEOUT_SECONDS:
        errors["timeout_seconds"] = [f"must be between 1 and {settings.BATCHES_MAX_TIMEOUT_SECONDS} seconds, not {timeout_seconds}"]
    if errors:
        raise ValidationError(errors)


def _check_filesystems(*, user: AbstractBaseUser, filesystem_ids: Sequence[Any]) -> list[Filesystem]:
    wanted = list(dict.fromkeys(str(fs_id) for fs_id in filesystem_ids))
    known = {str(fs.pk): fs for fs in Filesystem.objects.filter(pk__in=wanted)}
    missing = [(i, fs_id) for i, fs_id in enumerate(wanted) if fs_id not in known]
    if missing:
        raise ValidationError({f"hardware.filesystem_list[{i}]": [f"no filesystem with id {fs_id}"] for i, fs_id in missing})
    granted = {str(pk) for pk in granted_filesystems(user=user).filter(pk__in=wanted).values_list("pk", flat=True)}
    refused = [known[fs_id].name for fs_id in wanted if fs_id not in granted]
    if refused:
        raise PermissionDenied(f"hardware.filesystem_list: you are not granted the filesystem(s) {', '.join(refused)}")
    return [known[fs_id] for fs_id in wanted]


def _check_arguments(*, tool: Tool, jobs: Sequence[dict[str, Any]], roots: list[str]) -> list[dict[str, str]]:
    resolved: list[dict[str, str]] = []
    errors: dict[str, list[str]] = {}
    for index, job in enumerate(jobs):
        try:
            resolved.append(resolve_arguments(job.get("args", {}), tool.parameters, filesystem_roots=roots))
        except ArgumentsInvalid as exc:
            for name, message in exc.errors.items():
                field = f"jobs[{index}].args" if name == JOB_ARGS else f"jobs[{index}].args.{name}"
                errors[field] = [message]
            if len(errors) >= _MAX_REPORTED_ERRORS:
                break
    if errors:
        raise ValidationError(errors)
    return resolved
