"""Reads of tools, filesystems and batches, each scoped to the user who asks."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, Q, QuerySet

from batches.models import Batch, BatchDependency, Filesystem, Tool


def visible_tools() -> QuerySet[Tool]:
    """Tools any authenticated user may run."""
    return Tool.objects.filter(enabled=True)


def granted_filesystems(*, user: AbstractBaseUser) -> QuerySet[Filesystem]:
    """Filesystems `user` may mount: public ones, and those granted to them or a group."""
    return Filesystem.objects.filter(Q(public=True) | Q(users=user) | Q(groups__user=user)).distinct()


def user_batches(*, user: AbstractBaseUser) -> QuerySet[Batch]:
    """The caller's batches, with what the Batch shape needs in three queries."""
    return Batch.objects.filter(owner=user, deleted_at__isnull=True).select_related("tool").prefetch_related("filesystems", "dependencies")


# What the Batch shape needs of each batch, as plain values (no model instances).
BATCH_ROW = (
    "id",
    "name",
    "n_jobs",
    "cpu",
    "memory",
    "max_attempts",
    "retry_rules",
    "timeout_seconds",
    "priority",
    "max_running",
    "create_time",
    "tool_id",
)


def user_batch_rows(*, user: AbstractBaseUser) -> QuerySet:
    """The caller's batches as rows of plain values with their tool's name and
    description: a page of 1,000 batches as model instances (with their tools and
    prefetched filesystems) cost 25 times its query."""
    return Batch.objects.filter(owner=user, deleted_at__isnull=True).values(
        *BATCH_ROW, tool_name=F("tool__name"), tool_description=F("tool__description")
    )


def filesystems_of_page(*, user: AbstractBaseUser, rows: list[dict[str, Any]]) -> dict[Any, list[tuple[Any, str]]]:
    """Batch id -> its filesystems' (id, name), by name, for a page of `user_batch_rows`
    in id order, in one query on the id range (an IN list of 1,000 ids cost more to
    send than to answer)."""
    found: dict[Any, list[tuple[Any, str]]] = {row["id"]: [] for row in rows}
    if not rows:
        return found
    through = Batch.filesystems.through
    in_range = through.objects.filter(batch__owner=user, batch_id__gte=rows[0]["id"], batch_id__lte=rows[-1]["id"])
    for batch_id, fs_id, fs_name in in_range.order_by("filesystem__name").values_list("batch_id", "filesystem_id", "filesystem__name"):
        if batch_id in found:  # not a deleted batch between two of the page's
            found[batch_id].append((fs_id, fs_name))
    return found


def dependencies_of_page(*, user: AbstractBaseUser, rows: list[dict[str, Any]]) -> dict[Any, list[tuple[Any, str]]]:
    """Batch id -> the (batch id, condition) it depends on, in the order submitted, for
    a page of `user_batch_rows` in id order: one query on the id range, as
    `filesystems_of_page`."""
    found: dict[Any, list[tuple[Any, str]]] = {row["id"]: [] for row in rows}
    if not rows:
        return found
    in_range = BatchDependency.objects.filter(batch__owner=user, batch_id__gte=rows[0]["id"], batch_id__lte=rows[-1]["id"])
    for batch_id, depends_on_id, condition in in_range.order_by("id").values_list("batch_id", "depends_on_id", "condition"):
        if batch_id in found:
            found[batch_id].append((depends_on_id, condition))
    return found


def batch_filesystem_ids(*, batch_id: Any) -> list[Any]:
    """Ids of the batch's filesystems, by name (one query, no model instances)."""
    through = Batch.filesystems.through
    return list(through.objects.filter(batch_id=batch_id).order_by("filesystem__name").values_list("filesystem_id", flat=True))


def get_user_batch(*, user: AbstractBaseUser, batch_id: Any) -> Batch | None:
    return Batch.objects.filter(owner=user, pk=batch_id, deleted_at__isnull=True).select_related("tool").first()
