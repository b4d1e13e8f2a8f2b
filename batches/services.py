"""Submitting, deleting and cleaning up batches."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from batches.models import Batch, Filesystem, IdempotencyKey, Tool
from batches.parameters import JOB_ARGS, ArgumentsInvalid, argument_types, resolve_arguments
from batches.selectors import granted_filesystems, visible_tools
from jobs.logs import delete_logs
from jobs.models import Attempt, Job, JobEvent
from jobs.services import create_jobs, lock_rows
from jobs.states import UNFINISHED
from jobs.wakeup import notify_work

# A submission lists at most this many argument errors; past that, more are noise.
_MAX_REPORTED_ERRORS = 50
# cleanup deletes this many batches per transaction.
_CLEANUP_SLICE = 100


def submit_batch(
    *,
    user: AbstractBaseUser,
    tool_id: Any,
    cpu: int,
    memory: int,
    filesystem_ids: Sequence[Any],
    jobs: Sequence[dict[str, Any]],
    name: str = "",
    max_attempts: int = 1,
    timeout_seconds: int | None = None,
) -> Batch:
    """Create a batch and its jobs (all SUBMITTED) for `user`.

    Checks, in this order, and writes nothing unless all pass:
    - the tool exists and is enabled (400 on `tool_id`);
    - cpu, memory, attempts and timeout are within the configured maxima (400);
    - each filesystem exists (400) and is granted to the user (PermissionDenied, 403);
    - each job's `args` match the tool's parameters (400 naming `jobs[i].args.name`).
    Jobs are bulk-inserted; a batch of 10,000 jobs is a handful of INSERTs.
    """
    tool = visible_tools().filter(pk=tool_id).first()
    if tool is None:
        raise ValidationError({"tool_id": [f"no tool with id {tool_id}"]})
    _check_limits(tool=tool, cpu=cpu, memory=memory, n_jobs=len(jobs), max_attempts=max_attempts, timeout_seconds=timeout_seconds)
    filesystems = _check_filesystems(user=user, filesystem_ids=filesystem_ids)
    roots = [fs.path for fs in filesystems]
    resolved = _check_arguments(tool=tool, jobs=jobs, roots=roots)

    with transaction.atomic():
        batch = Batch.objects.create(
            owner=user,
            name=name,
            tool=tool,
            command=tool.command,
            arg_types=argument_types(tool.parameters),
            cpu=cpu,
            memory=memory,
            n_jobs=len(resolved),
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds or tool.timeout_seconds or settings.BATCHES_DEFAULT_TIMEOUT_SECONDS,
        )
        batch.filesystems.set(filesystems)
        create_jobs(batch=batch, arguments=resolved)
        notify_work()
    return batch


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was used before with another body."""


def submit_batch_once(*, user: AbstractBaseUser, key: str, fingerprint: str, **submission: Any) -> tuple[Batch, bool]:
    """`submit_batch` at most once per (user, key) within IdempotencyKey.KEEP_HOURS.

    Returns (batch, created). The same key with the same body `fingerprint` gives back
    the batch the first request created (created False), even when two requests race
    (the database's unique key decides); with another body it raises
    IdempotencyKeyReused. An expired key is forgotten and may be used again."""
    previous = _previous_submission(user=user, key=key)
    if previous is None:
        try:
            with transaction.atomic():
                batch = submit_batch(user=user, **submission)
                IdempotencyKey.objects.create(owner=user, key=key, fingerprint=fingerprint, batch=batch)
            return batch, True
        except IntegrityError:
            previous = _previous_submission(user=user, key=key)  # a concurrent request won
            if previous is None:
                raise
    if previous.fingerprint != fingerprint:
        raise IdempotencyKeyReused(f"Idempotency-Key {key!r} was used for another request body; use a new key for a new batch")
    return previous.batch, False


def _previous_submission(*, user: AbstractBaseUser, key: str) -> IdempotencyKey | None:
    cutoff = timezone.now() - timedelta(hours=IdempotencyKey.KEEP_HOURS)
    # Expired, or its batch deleted (its rows may still be on their way out): forgotten,
    # as the key of a batch already removed is.
    IdempotencyKey.objects.filter(Q(created__lt=cutoff) | Q(batch__deleted_at__isnull=False), owner=user, key=key).delete()
    return IdempotencyKey.objects.filter(owner=user, key=key).select_related("batch").first()


def forget_idempotency_keys(*, now: datetime | None = None) -> int:
    """Delete keys older than IdempotencyKey.KEEP_HOURS; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(hours=IdempotencyKey.KEEP_HOURS)
    return IdempotencyKey.objects.filter(created__lt=cutoff).delete()[0]


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


def delete_batches(*, batches: QuerySet[Batch]) -> int:
    """Delete `batches`: they leave their owner's view at once (one UPDATE, whatever
    their size), their running attempts are stopped by their workers, and their jobs,
    attempts, events and logs are removed in bounded chunks (`purge_deleted_batches`):
    here up to one chunk, so a small batch is gone when this returns; the rest by the
    workers' sweeps and `cleanup`, resumable after any crash. Callers scope `batches` to
    a user; this function never widens it. Returns batches deleted."""
    batch_ids = list(batches.filter(deleted_at__isnull=True).values_list("pk", flat=True))
    if not batch_ids:
        return 0
    with transaction.atomic():
        Batch.objects.filter(pk__in=batch_ids, deleted_at__isnull=True).update(deleted_at=timezone.now())
        notify_work()  # workers look at their attempts now
    purge_deleted_batches(budget=PURGE_CHUNK)
    return len(batch_ids)


# Jobs removed per transaction when purging deleted batches.
PURGE_CHUNK = 5000


def purge_deleted_batches(*, budget: int = PURGE_CHUNK) -> int:
    """Remove up to about `budget` jobs (with their attempts, events and log files) of
    deleted batches, oldest deletion first, `PURGE_CHUNK` per transaction; a batch row
    goes with its last job. Returns jobs removed (0: nothing left to do).

    Each chunk locks its job rows first (waiting for a worker that is recording a change
    to them): an event or attempt a worker wrote before is committed and removed with
    the rest, and a worker that comes after finds no job to write about. Log files are
    removed once their chunk has committed."""
    removed = 0
    while removed < budget:
        batch_id = Batch.objects.filter(deleted_at__isnull=False).order_by("deleted_at", "id").values_list("pk", flat=True).first()
        if batch_id is None:
            return removed
        removed += _purge_chunk(batch_id=batch_id, size=min(PURGE_CHUNK, budget - removed))
    return removed


def _purge_chunk(*, batch_id: Any, size: int) -> int:
    with transaction.atomic():
        ids = list(Job.objects.filter(batch_id=batch_id).order_by("pk").values_list("pk", flat=True)[:size])
        if not ids:
            Batch.objects.filter(pk=batch_id).delete()
            return 0
        jobs = Job.objects.filter(pk__in=ids)
        lock_rows(jobs)
        # Only jobs that have started have a log.
        log_ids = list(jobs.filter(attempts__gt=0).values_list("log_id", flat=True))
        # Events and attempts first (DO_NOTHING on their job), then the jobs.
        JobEvent.objects.filter(job_id__in=ids).delete()
        Attempt.objects.filter(job_id__in=ids).delete()
        jobs._raw_delete(jobs.db)
        transaction.on_commit(lambda: delete_logs(log_ids=log_ids))
    return len(ids)


def finished_batches(*, older_than: timedelta, now: datetime | None = None, owner: AbstractBaseUser | None = None) -> QuerySet[Batch]:
    """Batches, of `owner` or of every user, whose jobs have all finished (SUCCEEDED or
    FAILED) and that saw no activity (submission or a job ending) for `older_than`."""
    cutoff = (now or timezone.now()) - older_than
    batches = Batch.objects.filter(create_time__lt=cutoff, deleted_at__isnull=True)
    if owner is not None:
        batches = batches.filter(owner=owner)
    return batches.exclude(jobs__status__in=UNFINISHED).exclude(jobs__stop_time__gte=cutoff).order_by("id")


def cleanup_batches(
    *, older_than: timedelta, dry_run: bool = False, now: datetime | None = None, owner: AbstractBaseUser | None = None
) -> tuple[int, int]:
    """Delete the `finished_batches()` (of `owner`, or of everyone), then remove every
    deleted batch's rows and logs (these and any whose deletion a crash left
    unfinished), in bounded chunks.

    Returns (batches, jobs) deleted, or that would be with `dry_run`."""
    batches = finished_batches(older_than=older_than, now=now, owner=owner)
    if dry_run:
        return batches.count(), sum(batches.values_list("n_jobs", flat=True))
    deleted_batches = deleted_jobs = 0
    while chunk := list(batches.values_list("pk", "n_jobs")[:_CLEANUP_SLICE]):
        deleted_batches += delete_batches(batches=Batch.objects.filter(pk__in=[pk for pk, _ in chunk]))
        deleted_jobs += sum(n for _, n in chunk)
    while purge_deleted_batches(budget=PURGE_CHUNK * 10):
        pass
    return deleted_batches, deleted_jobs
