"""Jobs and their state-change events.

`status` is written only by `jobs.states.transition()`; see that module.
"""

from django.db import models
from django.utils import timezone

from batches.models import Batch
from batchsite.ids import uuid7
from jobs.states import Status


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
