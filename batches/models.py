"""Tools, filesystems and batches.

A Tool is an argv template (never a shell string) with declared parameters; a
Filesystem is a path that batches may mount; a Batch is one user's submission of many
jobs with one tool and one hardware configuration. Rules live in `batches.services` (checking a submission) and `jobs.submission` (writing it).
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

from core.ids import uuid7


class Filesystem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.SlugField(max_length=64, unique=True, help_text="Exposed to jobs as BATCH_FS_<NAME>.")
    description = models.CharField(max_length=300, blank=True)
    path = models.CharField(max_length=1000, help_text="Absolute path on the machines that run jobs.")
    read_only = models.BooleanField(default=False)
    public = models.BooleanField(default=False, help_text="Every user may mount it.")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="granted_filesystems")
    groups = models.ManyToManyField(Group, blank=True, related_name="granted_filesystems")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Tool(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=500, blank=True)
    command = models.JSONField(help_text='argv template, e.g. ["/bin/echo", "{message}"]; never run by a shell.')
    parameters = models.JSONField(default=dict, blank=True, help_text="name -> {type, required, default, choices, description}")
    timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Wall-clock limit per attempt; empty: the service default."
    )
    enabled = models.BooleanField(default=True, help_text="Disabled tools are hidden and refuse new batches.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    """A container image name (or pattern) a task's step may ask for, and the root
    filesystem its steps see: `root` empty is the host's system view (what sealed jobs
    see), else a directory holding an unpacked image. The catalog's `images` list, in
    its order: the first pattern that matches a name decides (`batches.images`)."""

    pattern = models.CharField(max_length=300, unique=True, help_text='An image name or a shell-style pattern, e.g. "alpine*".')
    root = models.CharField(max_length=1000, blank=True, help_text="Root filesystem directory; empty: the host's system view.")
    position = models.PositiveIntegerField(default=0, help_text="Patterns are tried in this order.")

    class Meta:
        ordering = ["position", "pattern"]

    def __str__(self) -> str:
        return f"{self.pattern} -> {self.root or 'host system'}"


class Batch(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    name = models.CharField(max_length=200, blank=True)
    tool = models.ForeignKey(Tool, on_delete=models.PROTECT, related_name="batches")
    command = models.JSONField(
        default=list, editable=False, help_text="The tool's argv template when the batch was submitted: what its jobs run."
    )
    arg_types = models.JSONField(
        default=dict, editable=False, help_text="Each parameter's type when the batch was submitted: how its jobs' args are shown."
    )
    cpu = models.PositiveIntegerField()
    memory = models.PositiveIntegerField(help_text="MiB per job.")
    filesystems = models.ManyToManyField(Filesystem, blank=True, related_name="batches")
    n_jobs = models.PositiveIntegerField()
    max_attempts = models.PositiveSmallIntegerField(default=1)
    retry_rules = models.JSONField(
        default=list, blank=True, editable=False, help_text="The submission's retry rules (batches.retry_rules), first match wins."
    )
    timeout_seconds = models.PositiveIntegerField(help_text="Wall-clock limit per attempt.")
    priority = models.IntegerField(default=0, help_text="Among its owner's batches, higher runs first (then older first).")
    max_running = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many of its jobs run at once; empty: no limit."
    )
    create_time = models.DateTimeField(default=timezone.now, editable=False)
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="A cancel of the whole batch is under way (its jobs are cancelled in chunks)."
    )
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    deleted_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Deleted: gone from its owner's view; its rows and logs are being removed."
    )
    task = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="A task's batch (one job): the steps, inputs and outputs its job runs instead of the tool's command (jobs.tasks).",
    )

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["owner", "id"], name="batch_owner_id"),
            models.Index(fields=["deleted_at"], name="batch_deleted", condition=models.Q(deleted_at__isnull=False)),
            models.Index(fields=["cancel_requested_at"], name="batch_cancelling", condition=models.Q(cancel_requested_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})" if self.name else str(self.id)


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` on `POST /batches`: the same key with the same body
    gives back the batch it created; with another body it is refused. Kept at least
    `KEEP` (a day), then forgotten (`cleanup`)."""

    KEEP_HOURS = 24

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the submitted body, canonical JSON.")
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key")]
        indexes = [models.Index(fields=["created"], name="idempotency_created")]

    def __str__(self) -> str:
        return self.key


class BatchDependency(models.Model):
    """`batch`'s jobs wait until `depends_on` has succeeded (every job SUCCEEDED) or
    ended (every job SUCCEEDED or FAILED), as `condition` says; jobs.dispatch decides.

    A batch names only batches that exist before it (its own are checked at submission,
    `batches.services.check_submission`), so dependencies never form a cycle.
    `depends_on` is a plain reference (no database constraint, no cascade): a batch
    depended on is purged after its deletion, and the dependent must still see that it
    is gone (its jobs then fail) rather than lose the row and run."""

    class Condition(models.TextChoices):
        SUCCEEDED = "succeeded"
        ENDED = "ended"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="dependencies")
    depends_on = models.ForeignKey(Batch, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    condition = models.CharField(max_length=16, choices=Condition.choices)

    class Meta:
        verbose_name_plural = "batch dependencies"
        ordering = ["batch", "id"]
        constraints = [models.UniqueConstraint(fields=["batch", "depends_on"], name="batch_dependency_unique")]

    def __str__(self) -> str:
        return f"{self.batch_id} after {self.depends_on_id} {self.condition}"
