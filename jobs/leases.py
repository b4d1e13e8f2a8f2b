"""Workers and their leases: registering, renewing, stopping, and telling a dead
worker from a live one. A worker renews its lease with a heartbeat; once the lease has
run out, any other worker may declare it LOST (`jobs.recovery.recover_lost_workers`)."""

import os
import socket
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs.executors.base import Capacity
from jobs.executors.procs import boot_id, process_alive, process_start_time
from jobs.models import Worker


def register_worker(
    *, executor: str, capacity: Capacity, lease_seconds: float, keeps_attempts: bool = False, isolation: dict[str, bool] | None = None
) -> Worker:
    """A new ACTIVE worker row for this process, with a lease of `lease_seconds`.
    `keeps_attempts`: its attempts outlive it (see `Worker.keeps_attempts`);
    `isolation`: which isolation parts are in force for its attempts."""
    now = timezone.now()
    pid = os.getpid()
    node = socket.gethostname()
    return Worker.objects.create(
        name=f"{node}:{pid}",
        executor=executor,
        node=node,
        boot_id=boot_id(),
        pid=pid,
        pid_start=process_start_time(pid),
        cpus=capacity.cpus,
        memory_mib=capacity.memory_mib,
        started_at=now,
        heartbeat_at=now,
        lease_expires=now + timedelta(seconds=lease_seconds),
        keeps_attempts=keeps_attempts,
        isolation=isolation or {},
    )


def renew_lease(*, worker: Worker, lease_seconds: float) -> bool:
    """Extend the worker's lease. False if the worker is no longer ACTIVE (another
    worker declared it lost): its attempts must then be stopped and not reported."""
    now = timezone.now()
    expires = now + timedelta(seconds=lease_seconds)
    changed = Worker.objects.filter(pk=worker.pk, state=Worker.State.ACTIVE).update(heartbeat_at=now, lease_expires=expires)
    if changed:
        worker.heartbeat_at, worker.lease_expires = now, expires
    return bool(changed)


def stop_worker(*, worker: Worker) -> None:
    """Mark the worker STOPPED (a clean exit: its attempts were requeued, or are left for
    the next worker to adopt)."""
    Worker.objects.filter(pk=worker.pk, state=Worker.State.ACTIVE).update(state=Worker.State.STOPPED, stopped_at=timezone.now())


def expire_dead_local_workers(*, worker: Worker) -> int:
    """End the lease now of ACTIVE workers on this same machine (same boot) whose process
    is gone: a restarted worker need not wait a full lease to recover them. Returns how
    many."""
    now = timezone.now()
    dead = [
        other.pk
        for other in Worker.objects.filter(state=Worker.State.ACTIVE, node=worker.node, lease_expires__gt=now).exclude(pk=worker.pk)
        if other.boot_id != worker.boot_id or not process_alive(other.pid or 0, other.pid_start)
    ]
    if dead:
        Worker.objects.filter(pk__in=dead, state=Worker.State.ACTIVE).update(lease_expires=now)
    return len(dead)


def worker_is_dead(worker_id: str) -> bool:
    """For executors cleaning up: the worker is one of ours (in this database) and is not
    ACTIVE, or its lease has run out. An unknown id belongs to another deployment (or
    test run) on the same machine, whose processes are not ours to kill."""
    try:
        row = Worker.objects.filter(pk=worker_id).values_list("state", "lease_expires").first()
    except (ValueError, ValidationError):
        return False
    if row is None:
        return False
    state, expires = row
    return state != Worker.State.ACTIVE or expires <= timezone.now()
