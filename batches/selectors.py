"""Reads of tools, filesystems and batches, each scoped to the user who asks."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet

from batches.models import Batch, Filesystem, Tool
from jobs.models import Job
from jobs.states import Status


def visible_tools() -> QuerySet[Tool]:
    """Tools any authenticated user may run."""
    return Tool.objects.filter(enabled=True)


def granted_filesystems(*, user: AbstractBaseUser) -> QuerySet[Filesystem]:
    """Filesystems `user` may mount: public ones, and those granted to them or a group."""
    return Filesystem.objects.filter(Q(public=True) | Q(users=user) | Q(groups__user=user)).distinct()


def user_batches(*, user: AbstractBaseUser) -> QuerySet[Batch]:
    """The caller's batches, with what the Batch shape needs in two queries."""
    return Batch.objects.filter(owner=user, deleted_at__isnull=True).select_related("tool").prefetch_related("filesystems")


def get_user_batch(*, user: AbstractBaseUser, batch_id: Any) -> Batch | None:
    return Batch.objects.filter(owner=user, pk=batch_id, deleted_at__isnull=True).select_related("tool").first()


def status_counts(*, batch: Batch) -> dict[str, int]:
    """Jobs per status, lower-case keys, every status present. One GROUP BY on the
    (batch, status) index."""
    counts = {status.lower(): 0 for status in Status.values}
    # COUNT(*), not COUNT(id): PostgreSQL then answers from the index alone.
    rows = Job.objects.filter(batch=batch).order_by().values_list("status").annotate(n=Count("*"))
    for status, n in rows:
        counts[status.lower()] = n
    return counts
