"""Workers, jobs, their attempts and state-change events, and the deployment's policy.

A job's `status` is written only by `jobs.transitions.transition()`; see that module.
An attempt row only by `jobs.attempts`.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from batches.models import Batch
from core.ids import uuid7
from jobs.statuses import Status


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
    isolation = models.JSONField(
        default=dict,
        blank=True,
        help_text="Which isolation parts seal its attempts: job_user, sandbox, cgroup_memory, cgroup_pids, cgroup_cpu.",
    )
    keeps_attempts = models.BooleanField(
        default=False,
        help_text="Its attempts outlive it (a cluster runs them): the next worker of the same executor adopts them "
        "instead of retrying them.",
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["state", "lease_expires"], name="worker_state_lease")]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No index of its own: the (batch, index) and (batch, status, index) ones below lead
    # with it, and a bare one is what the planner took, then sorted a whole batch, to
    # read a few jobs of a fresh batch it had no statistics for.
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="jobs", db_index=False)
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
    charged_attempts = models.PositiveSmallIntegerField(
        default=0, editable=False, help_text="Failed attempts counted against max_attempts since the last retry by the user."
    )
    requeues = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,  # rows written in raw SQL (bulk loads, benches) get it too
        editable=False,
        help_text="Attempts ended by infrastructure failures (not charged) since the last retry by the user; at most BATCHES_MAX_REQUEUES.",
    )
    memory_mib = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Memory for its next attempt when a retry rule raised it; empty: the batch's."
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="job_batch_index")]
        indexes = [
            # BatchStatus counts: an index-only GROUP BY status within one batch; and the
            # next jobs of a batch in a state, in submission order: a claim's RUNNABLE
            # ones (`jobs.claiming`), dispatch's SUBMITTED ones (`jobs.dispatch`). Each
            # reads only the entries it takes, however large the batch and however
            # many of its jobs have moved on, with or without the planner's statistics.
            models.Index(fields=["batch", "status", "index"], name="job_batch_status_index"),
            # Workers and dispatch walk the distinct batches that have jobs in a state
            # (a skip scan, `jobs.dispatch.skip_scan`).
            models.Index(fields=["status", "batch", "id"], name="job_status_batch_id"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class Attempt(models.Model):
    """One try at running a job: where and how it ran and how it ended.

    A job has at most one live attempt (no `end_time`), which the database enforces.
    `number` counts from 1 per job. `external_id` names the attempt to its executor
    (`pid:start-ticks` locally, a Slurm job id on a cluster), so a worker that starts
    later can find it again. `charged` is False for attempts that ended through no
    fault of the job (its worker stopped or lost the database): they do not use up
    `max_attempts`. `reason_code`, `signal` and the usage figures are written when
    it ends. Written by `jobs.attempts` only.
    """

    class State(models.TextChoices):
        LAUNCHING = "LAUNCHING"  # claimed; not yet started by the executor
        RUNNING = "RUNNING"
        ENDED = "ENDED"

    # DO_NOTHING: removed with their jobs by jobs.removal.purge_deleted_batches.
    # No index of their own: (job, number) and the live-attempt index below cover the
    # look-ups, and every index is one more write per attempt.
    job = models.ForeignKey(Job, on_delete=models.DO_NOTHING, related_name="attempt_records", db_index=False)
    number = models.PositiveSmallIntegerField()
    executor = models.CharField(max_length=20)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts", db_index=False)
    external_id = models.CharField(max_length=100, blank=True)
    node = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.LAUNCHING)
    create_time = models.DateTimeField(default=timezone.now)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    charged = models.BooleanField(default=True)
    log_offset = models.BigIntegerField(null=True, blank=True, help_text="Where this attempt's section of the job's log begins.")
    # How it ended, for programs (core.reason_codes; no `choices`, so that a new code
    # needs no migration), and the signal that killed it.
    reason_code = models.CharField(max_length=20, blank=True, help_text="One of core.reason_codes.ALL.")
    signal = models.SmallIntegerField(null=True, blank=True)
    # What it had, and what it used (None: not measured; see jobs.executors.usage).
    memory_mib = models.PositiveIntegerField(null=True, blank=True, help_text="Memory it was given, MiB.")
    cpus = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Cores it was given.")
    max_rss_mib = models.FloatField(null=True, blank=True, help_text="Peak resident memory, MiB.")
    cpu_seconds = models.FloatField(null=True, blank=True, help_text="User + system cpu time of all its processes.")
    elapsed_seconds = models.FloatField(null=True, blank=True, help_text="Wall-clock run time, to the millisecond.")
    task_log = models.JSONField(
        null=True, blank=True, help_text="A task's attempt: each step's times, exit code and output tail, the outputs delivered."
    )

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="attempt_job_number"),
            models.UniqueConstraint(fields=["job"], condition=models.Q(end_time__isnull=True), name="attempt_one_live_per_job"),
        ]
        indexes = [models.Index(fields=["worker"], condition=models.Q(end_time__isnull=True), name="attempt_live_worker")]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.number}"


class JobEvent(models.Model):
    """One state change of a job (`jobs.transitions`), or a batch's last job ending
    (`batch.finished`, no job: written by `jobs.batch_finished`), in the order the feed
    (`GET /events`, `jobs.feed`) serves them: by id, scoped to `owner`.

    `batch` and `owner` are copies of the job's (neither ever changes), so the feed reads
    one user's changes from one index, whatever the table holds. Every writer of these
    rows writes (or locks) another row first in the same transaction, so it holds a
    transaction id before it draws an event id: the feed relies on it (`jobs.feed`).
    A job's events go with the job (`jobs.removal`); a `batch.finished` stays after its
    batch is deleted (it happened), until every event older than
    BATCHES_EVENTS_RETENTION_DAYS is pruned by `cleanup` (`jobs.feed.prune_events`).
    """

    # DO_NOTHING: events are removed with their jobs by jobs.removal.purge_deleted_batches,
    # one statement per chunk; Django's cascade would load every job of a large batch first.
    job = models.ForeignKey(Job, on_delete=models.DO_NOTHING, related_name="events", null=True, blank=True)
    # No constraint or index of their own: (owner, id) serves the feed, and the rows go
    # before their batch's (jobs.removal).
    batch = models.ForeignKey(
        Batch, on_delete=models.DO_NOTHING, related_name="+", null=True, blank=True, db_constraint=False, db_index=False
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, related_name="+", null=True, blank=True, db_constraint=False, db_index=False
    )
    from_status = models.CharField(max_length=10, choices=Status.choices, blank=True)
    to_status = models.CharField(max_length=10, choices=Status.choices, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    time = models.DateTimeField(default=timezone.now)
    counts = models.JSONField(null=True, blank=True, help_text="batch.finished: the batch's jobs per status.")

    class Meta:
        ordering = ["job", "id"]
        # The feed: one user's events after a given id, in id order (a keyset).
        indexes = [models.Index(fields=["owner", "id"], name="jobevent_owner_id")]

    def __str__(self) -> str:
        if self.job_id is None:
            return f"batch {self.batch_id} finished"
        return f"{self.job_id}: {self.from_status} -> {self.to_status}"


class FeedState(models.Model):
    """Where the event feed stands (one row): `pruned_through`, the highest event id
    removed by retention (a cursor below it has missed events: 410), and
    `finished_through`, the event id up to which `jobs.batch_finished` has looked for
    batches whose last job ended."""

    pruned_through = models.BigIntegerField(default=0)
    finished_through = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"pruned through {self.pruned_through}, batches finished through {self.finished_through}"


class Policy(models.Model):
    """Rules for the whole deployment, which every worker follows whatever its own
    environment says (one row). `require_isolation`: no job starts unsealed; it is set
    by any process started with BATCHES_REQUIRE_ISOLATION=1 (a worker, the web server)
    and cleared only by an operator (`python manage.py require_isolation --off`)."""

    require_isolation = models.BooleanField(default=False)
    changed_by = models.CharField(max_length=200, blank=True, help_text="Which process or operator changed it last.")
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "policy"

    def __str__(self) -> str:
        return "isolation required" if self.require_isolation else "isolation not required"


class Usage(models.Model):
    """A user's decayed usage: the cpu-seconds of their ended attempts, each halved every
    BATCHES_FAIRSHARE_HALF_LIFE seconds since it was used, as of `as_of`. Running
    attempts are added when read (`jobs.fairshare`). Written by `jobs.fairshare` only."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage", editable=False)
    cpu_seconds = models.FloatField(default=0.0, editable=False)
    as_of = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"{self.user}: {self.cpu_seconds:.0f} cpu-s as of {self.as_of:%Y-%m-%d %H:%M:%S}"


class Webhook(models.Model):
    """A user's receiver of events: each event of the owner's feed whose type is in
    `event_types` becomes a Delivery (`jobs.webhook_delivery`), from `cursor` on (the
    last feed id looked at). The secret signs each delivery; it is shown once."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    event_types = models.JSONField(help_text="Event types delivered, e.g. ['batch.finished', 'job.failed'].")
    secret = models.CharField(max_length=100, editable=False)
    cursor = models.BigIntegerField(default=0, editable=False, help_text="The last feed event id turned into deliveries.")
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [models.Index(fields=["owner", "id"], name="webhook_owner_id")]

    def __str__(self) -> str:
        return self.url


class Delivery(models.Model):
    """One event for one webhook, sent until the receiver answers 2xx (at least once),
    after the webhook's earlier deliveries of the same batch (in order per batch), with
    backoff, for BATCHES_WEBHOOK_RETRY_HOURS; `tries` records each try."""

    class State(models.TextChoices):
        PENDING = "PENDING"
        DELIVERED = "DELIVERED"
        FAILED = "FAILED"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.BigIntegerField(help_text="The feed event's id (the event itself may be pruned since).")
    event_type = models.CharField(max_length=30)
    batch_id = models.UUIDField()
    payload = models.JSONField(help_text="The body sent: the event as GET /events shows it.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created = models.DateTimeField(default=timezone.now)
    next_try = models.DateTimeField(
        default=timezone.now,
        null=True,
        blank=True,
        help_text="When it is tried next; empty while an earlier delivery of its batch to the same webhook is pending.",
    )
    delivered = models.DateTimeField(null=True, blank=True)
    tries = models.JSONField(default=list, blank=True, help_text="Each try: time, status (HTTP) or error, milliseconds.")

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["webhook", "event_id"], name="delivery_webhook_event")]
        # Partial (delivered ones are most of the table and never read by the sender):
        # its queue, the due deliveries longest due first (only a batch's oldest pending
        # one has a next_try), and each (webhook, batch)'s pending ones in order, to
        # find the next when one ends (`jobs.webhook_delivery`).
        indexes = [
            models.Index(fields=["next_try", "id"], name="delivery_due", condition=models.Q(state="PENDING")),
            models.Index(fields=["webhook", "batch_id", "id"], name="delivery_batch_pending", condition=models.Q(state="PENDING")),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.event_id} -> {self.webhook_id}"
