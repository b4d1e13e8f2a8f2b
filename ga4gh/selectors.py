"""Reading a user's TES tasks: always their own; another user's task is not found."""

import base64
import binascii
import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, QuerySet, Subquery, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from ga4gh.models import TaskRecord
from ga4gh.states import state_filter
from jobs.models import Attempt


def user_tasks(*, user: AbstractBaseUser) -> QuerySet[TaskRecord]:
    """`user`'s tasks (batches not deleted), newest first, with their job and the last
    attempt's reason code (`last_code`, what the state needs)."""
    last = Attempt.objects.filter(job_id=OuterRef("job_id")).order_by("-number").values("reason_code")[:1]
    return (
        TaskRecord.objects.filter(owner=user, batch__deleted_at__isnull=True)
        .select_related("job")
        .annotate(last_code=Subquery(last))
        .order_by("-batch")
    )


def find_task(*, user: AbstractBaseUser, task_id: str) -> TaskRecord | None:
    try:
        pk = uuid.UUID(task_id)
    except ValueError:
        return None
    return user_tasks(user=user).filter(pk=pk).first()


def filtered(tasks: QuerySet[TaskRecord], *, name_prefix: str | None, state: str | None, tags: dict[str, str]) -> QuerySet[TaskRecord]:
    """ListTasks' filters: a name prefix, a TES state, tags (an empty value matches any
    value of the key; every key given must be there)."""
    if name_prefix:
        tasks = tasks.filter(name__startswith=name_prefix)
    if state:
        tasks = tasks.filter(state_filter(state))
    for n, (key, value) in enumerate(tags.items()):
        tasks = tasks.filter(tags__has_key=key)
        if value != "":
            # The key as a value, never as part of a lookup's name ("a__b" is a key here).
            # Cast: compared as text ("1" is the string "1", not the number).
            tasks = tasks.annotate(**{f"tag_{n}": Cast(KeyTextTransform(key, "tags"), TextField())}).filter(**{f"tag_{n}": value})
    return tasks


def page_token(last: TaskRecord) -> str:
    return base64.urlsafe_b64encode(last.pk.bytes).decode().rstrip("=")


def after_token(tasks: QuerySet[TaskRecord], token: str) -> QuerySet[TaskRecord] | None:
    """The tasks after a page that ended at `token` (None: not a token of ours)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        pk = uuid.UUID(bytes=raw)
    except (binascii.Error, ValueError):
        return None
    return tasks.filter(pk__lt=pk)


def attempts_of(records: list[TaskRecord]) -> dict[Any, list[Attempt]]:
    """job id -> its attempts, oldest first, for a page of tasks: one query."""
    found: dict[Any, list[Attempt]] = {}
    for attempt in Attempt.objects.filter(job_id__in=[r.job_id for r in records]).order_by("job_id", "number"):
        found.setdefault(attempt.job_id, []).append(attempt)
    return found
