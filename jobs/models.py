"""Jobs and their state-change events.

`status` is written only by `jobs.states.transition()`; see that module.
"""

from django.db import models
from django.utils import timezone

from batches.models import Batch
from batchsite.ids import uuid7
from jobs.states import Status


class Worker(models.Model):
    """One running executor process (a `runworker`): what it can run, and its lease.

    A worker renews `lease_expires` with a heartbeat; once the lease has run out, any
    other worker may declare it LOST and requeue or fail its jobs (`worker lost`). The
    worker's own fencing helper kills its jobs before the lease runs out if the
    heartbeats stop, so a lost worker's attempts are dead before they are retried.
    """

    class State(models.TextChoices):
        ACTIVE = "ACTIVE"
        STOPPED = "STOPPED"
        LOST = "LOST"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200, help_text="host:pid, for people.")
    executor = models.CharField(max_length=20, default="local")
    node = models.CharField(max_length=255, help_text="Host name of the machine the worker runs on.")
    boot_id = models.CharField(max_length=64, blank=True, help_text="Kernel boot id: tells a rebooted host from the same one.")
    pid = models.PositiveIntegerField(null=True, blank=True)
    pid_start = models.CharField(max_length=32, blank=True, help_text="Process start time, to tell a reused pid apart.")
    cpus = models.PositiveIntegerField(help_text="Cores this worker offers.")
    memory_mib = models.PositiveIntegerField(help_text="Memory this worker offers, MiB.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    lease_expires = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["state", "lease_expires"], name="worker_state_lease")]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="jobs")
    index = models.PositiveIntegerField(help_text="Position in the submitted jobs list.")
    args = models.JSONField(help_text="Argument values as the program receives them (strings).")
    log_id = models.UUIDField(default=uuid7, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SUBMITTED, editable=False)
    reason = models.CharField(max_length=500, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False, help_text="Attempts started so far.")
    exit_code = models.IntegerField(null=True, blank=True, editable=False)
    create_time = models.DateTimeField(default=timezone.now, editable=False)
    start_time = models.DateTimeField(null=True, blank=True, editable=False)
    stop_time = models.DateTimeField(null=True, blank=True, editable=False)
    worker = models.ForeignKey(
        Worker,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        editable=False,
        help_text="Worker of the latest attempt.",
    )

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="job_batch_index")]
        indexes = [
            # BatchStatus counts: an index-only GROUP BY status within one batch.
            models.Index(fields=["batch", "status"], name="job_batch_status"),
            # Executors look for work by state across all batches.
            models.Index(fields=["status", "id"], name="job_status_id"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class JobEvent(models.Model):
    # DO_NOTHING: events are removed with their jobs by jobs.services.delete_batches in
    # one statement; Django's cascade would load every job of a large batch first.
    job = models.ForeignKey(Job, on_delete=models.DO_NOTHING, related_name="events")
    from_status = models.CharField(max_length=10, choices=Status.choices)
    to_status = models.CharField(max_length=10, choices=Status.choices)
    reason = models.CharField(max_length=500, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    time = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "id"]

    def __str__(self) -> str:
        return f"{self.job_id}: {self.from_status} -> {self.to_status}"
