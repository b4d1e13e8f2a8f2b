"""The deployment's rules that bind every worker (`jobs.models.Policy`): today, whether
jobs must be sealed. A worker that cannot seal jobs where sealing is required gets no
jobs (`claim_jobs` asks `refusal`), says why when it starts, and /readyz names it."""

import time

from django.db import transaction
from django.utils import timezone

from jobs.models import Policy, Worker

_CACHE_SECONDS = 2.0  # a claim asks at most this often; a change reaches workers within it
_cached: tuple[float, bool] = (-1e9, False)


def isolation_required(*, fresh: bool = False) -> bool:
    """Sealing is required for every job of the deployment."""
    global _cached
    checked, required = _cached
    if fresh or time.monotonic() - checked > _CACHE_SECONDS:
        required = Policy.objects.filter(pk=1, require_isolation=True).exists()
        _cached = (time.monotonic(), required)
    return required


def set_isolation_required(*, required: bool, by: str) -> bool:
    """Require sealing (or stop requiring it) for every worker. True if it changed."""
    global _cached
    with transaction.atomic():
        policy, _ = Policy.objects.select_for_update().get_or_create(pk=1)
        changed = policy.require_isolation != required
        if changed:
            policy.require_isolation, policy.changed_by, policy.changed_at = required, by[:200], timezone.now()
            policy.save()
    _cached = (time.monotonic(), required)
    return changed


def missing_parts(isolation: dict[str, bool]) -> list[str]:
    """The isolation parts a worker's report lacks (a report of none: it seals nothing
    that it can say)."""
    if not isolation:
        return ["all (the worker reports no isolation)"]
    return [part for part, in_force in isolation.items() if not in_force]


def refusal(worker: Worker) -> str:
    """Why `worker` may not start jobs ("" if it may)."""
    if not isolation_required():
        return ""
    lacking = missing_parts(worker.isolation)
    if not lacking:
        return ""
    return f"the deployment requires sealed jobs and worker {worker.name} cannot seal them (missing: {', '.join(lacking)}): it gets no jobs"
