"""A GA4GH TES task: the document a client sent, kept beside the one-job batch that runs
it (`jobs.tasks`). Its state, times and logs are read from that batch's job and
attempts (`ga4gh.render`); only what TES has and a batch does not is kept here."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from batches.models import Batch
from jobs.models import Job


class TaskRecord(models.Model):
    # The task's id is its batch's.
    batch = models.OneToOneField(Batch, primary_key=True, on_delete=models.CASCADE, related_name="tes_task")
    # The batch's one job. No database constraint: jobs are removed in chunks before
    # their batch (jobs.removal), and this row goes with the batch.
    job = models.OneToOneField(Job, on_delete=models.DO_NOTHING, db_constraint=False, related_name="tes_task")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tes_tasks", db_index=False)
    name = models.CharField(max_length=1000, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    document = models.JSONField(help_text="The task as submitted (without the server's fields): what the BASIC and FULL views show.")
    creation_time = models.DateTimeField(default=timezone.now)
    warnings = models.JSONField(default=list, blank=True, help_text="What was ignored at creation, shown in its system_logs.")

    class Meta:
        ordering = ["-batch"]
        indexes = [
            models.Index(fields=["owner", "-batch"], name="tes_task_owner_newest"),
            models.Index(fields=["owner", "name"], name="tes_task_owner_name"),
        ]

    def __str__(self) -> str:
        return self.name or str(self.pk)
