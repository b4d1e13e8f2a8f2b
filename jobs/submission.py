"""Submitting a batch: the catalog's checks (batches/services.py), then the batch and its
jobs written in one transaction, at most once per idempotency key."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from batches.models import Batch, BatchDependency, IdempotencyKey
from batches.parameters import argument_types
from batches.services import check_submission
from jobs.services import create_jobs
from jobs.wakeup import notify_work


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
    priority: int = 0,
    max_running: int | None = None,
    depends_on: Sequence[dict[str, Any]] = (),
    retry_rules: Sequence[dict[str, Any]] = (),
) -> Batch:
    """Create a batch and its jobs (all SUBMITTED) for `user`, once the submission has
    passed `check_submission` (batches/services.py: tool, limits, filesystems, arguments;
    nothing is written unless all pass). Jobs are bulk-inserted; a batch of 10,000 jobs
    is a handful of INSERTs.

    `depends_on` (`[{"batch_id", "condition"}]`, see `check_dependencies`) makes the
    jobs wait, PENDING, until each batch named has succeeded or ended; jobs/dispatch.py
    decides when they go on, or fail when a condition can no longer hold. `retry_rules`
    (batches.retry_rules) say which failures are retried; jobs.retry_policy applies them."""
    checked = check_submission(
        user=user,
        tool_id=tool_id,
        cpu=cpu,
        memory=memory,
        filesystem_ids=filesystem_ids,
        jobs=jobs,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        priority=priority,
        max_running=max_running,
        depends_on=depends_on,
        retry_rules=retry_rules,
    )
    tool, resolved = checked.tool, checked.arguments

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
            retry_rules=checked.retry_rules,
            timeout_seconds=timeout_seconds or tool.timeout_seconds or settings.BATCHES_DEFAULT_TIMEOUT_SECONDS,
            priority=priority,
            max_running=max_running,
        )
        batch.filesystems.set(checked.filesystems)
        BatchDependency.objects.bulk_create(
            BatchDependency(batch=batch, depends_on=depended_on, condition=condition) for depended_on, condition in checked.dependencies
        )
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
