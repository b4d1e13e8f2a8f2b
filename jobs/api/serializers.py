"""Shapes of jobs, as the seed names them."""

from typing import Any

import orjson
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.parameters import as_sent
from core.reason_codes import ALL as REASON_CODES
from jobs.models import Attempt, Job, JobEvent
from jobs.statuses import Status
from jobs.waiting import IN_LINE, list_reasons


class ArgumentSerializer(serializers.Serializer):
    argument_key = serializers.CharField()
    argument_value = serializers.CharField()


class JobToolSerializer(serializers.Serializer):
    tool_id = serializers.UUIDField()
    tool_name = serializers.CharField()
    tool_description = serializers.CharField()


def _argument_list(args: dict[str, str]) -> list[dict[str, str]]:
    return [{"argument_key": key, "argument_value": value} for key, value in args.items()]


def job_row(job: Job | dict[str, Any], tool: dict[str, Any]) -> dict[str, Any]:
    """A job as the list shows it: the fields JobSerializer declares (which the schema
    documents), written out by hand from a row of jobs.selectors.batch_jobs. A page of
    1,000 jobs is the hottest read, and DRF's per-field machinery cost more than the
    query; tests/test_api_contract.py pins the shape. Ids stay UUIDs: the renderer
    writes them (core.renderers)."""
    row = job if isinstance(job, dict) else {name: getattr(job, name) for name in ("id", "log_id", "args", "status", "reason")}
    args = orjson.loads(row["args_json"]) if "args_json" in row else row["args"]
    return {
        "job_id": row["id"],
        "job_tool": tool,
        "job_log_id": row["log_id"],
        "job_argument_list": _argument_list(args),
        "status": row["status"],
        "reason": row["reason"],
    }


class JobListSerializer(serializers.ListSerializer):
    """A page of jobs: the tool looked up once for all of them, not per job."""

    def to_representation(self, data: Any) -> list[dict[str, Any]]:
        tool = self.context["job_tool"]
        rows = [job_row(job, tool) for job in data]
        in_line = {row["job_id"]: row["status"] for row in rows if row["status"] in IN_LINE}
        if in_line and "batch" in self.context:
            # Jobs in line say what holds them, as JobDetail does (without their place):
            # the batch's figures, read once for the page.
            reasons = list_reasons(batch=self.context["batch"], in_line=in_line)
            for row in rows:
                row["reason"] = reasons.get(row["job_id"], row["reason"])
        return rows


class JobSerializer(serializers.Serializer):
    """A job in a list. `job_tool` is the batch's tool, which the view reads once and
    passes in the context (every job of a batch runs the same tool)."""

    job_id = serializers.UUIDField(source="id")
    job_tool = serializers.SerializerMethodField()
    job_log_id = serializers.UUIDField(source="log_id")
    job_argument_list = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=Status.choices)
    reason = serializers.CharField(
        help_text="Why the job is in its state (empty when there is nothing to say), as in JobDetail; for a job in line, "
        "what holds it, as JobDetail says without its place in line (its queue_position)."
    )

    @extend_schema_field(JobToolSerializer)
    def get_job_tool(self, job: Job) -> dict[str, Any]:
        return self.context["job_tool"]

    @extend_schema_field(ArgumentSerializer(many=True))
    def get_job_argument_list(self, job: Job) -> list[dict[str, str]]:
        return _argument_list(job.args)

    def to_representation(self, job: Job | dict[str, Any]) -> dict[str, Any]:
        return job_row(job, self.context["job_tool"])

    class Meta:
        list_serializer_class = JobListSerializer


class JobHardwareSerializer(serializers.Serializer):
    filesystems = serializers.ListField(child=serializers.UUIDField(), help_text="Filesystem ids.")
    memory = serializers.IntegerField(help_text="MiB.")
    cpu = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    """What an attempt used; a figure is null when it was not measured (an attempt that
    never started, or was recovered after its worker died)."""

    max_rss_mib = serializers.FloatField(allow_null=True, help_text="Peak resident memory, MiB (to 0.1).")
    cpu_seconds = serializers.FloatField(allow_null=True, help_text="User + system cpu time of all its processes, seconds.")
    elapsed_seconds = serializers.FloatField(allow_null=True, help_text="Wall-clock run time, seconds (to the millisecond).")


class AttemptSerializer(serializers.ModelSerializer):
    """One attempt at running a job: where and how it ran, how it ended, what it used."""

    attempt = serializers.IntegerField(source="number", help_text="1 for the first attempt.")
    state = serializers.ChoiceField(choices=Attempt.State.choices, help_text="LAUNCHING (claimed, not started), RUNNING or ENDED.")
    start_time = serializers.DateTimeField(allow_null=True, help_text="When it started (null until it does).")
    stop_time = serializers.DateTimeField(source="end_time", allow_null=True, help_text="When it ended (null while it runs).")
    reason_code = serializers.ChoiceField(
        choices=[("", "")] + [(code, code) for code in REASON_CODES],
        help_text="Why it ended, for programs (empty while it runs); the list is in the README, 'What an attempt used'.",
    )
    reason = serializers.CharField(help_text="Why it ended, for people: `exit code 3`, `timed out after 5 s`...")
    executor_id = serializers.CharField(source="external_id", help_text="Its id in the executor: a pid, a Slurm job id (`123_4`).")

    class Meta:
        model = Attempt
        fields = [
            "attempt",
            "state",
            "start_time",
            "stop_time",
            "elapsed_seconds",
            "cpu_seconds",
            "max_rss_mib",
            "exit_code",
            "signal",
            "reason_code",
            "reason",
            "memory_mib",
            "cpus",
            "node",
            "executor",
            "executor_id",
        ]


class JobDetailSerializer(serializers.Serializer):
    job_id = serializers.UUIDField(source="id")
    log_id = serializers.UUIDField()
    hardware = serializers.SerializerMethodField()
    args = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=Status.choices)
    reason = serializers.SerializerMethodField(
        help_text="Why the job is in its state (empty when there is nothing to say); for a waiting job, what holds it: "
        "its place in line and the fair-share figures, its batch's max_running, a dependency, a quota, no job account, "
        "no worker large enough, the cluster."
    )
    queue_position = serializers.SerializerMethodField(
        help_text="Its place in the order in which waiting jobs will start (1 = next), as of this answer; null when it is "
        "not in line (running, ended, or PENDING on what its reason names)."
    )
    create_time = serializers.DateTimeField()
    start_time = serializers.DateTimeField(allow_null=True)
    stop_time = serializers.DateTimeField(allow_null=True)
    batch_id = serializers.UUIDField()
    attempts = serializers.IntegerField(help_text="Attempts started so far.")
    exit_code = serializers.IntegerField(allow_null=True, help_text="Exit code of the last attempt, if it exited.")
    signal = serializers.SerializerMethodField(help_text="The signal that killed the program of the last ended attempt, if one did.")
    usage = serializers.SerializerMethodField(
        help_text="What the last ended attempt used (every attempt's: GET .../attempts); null before any attempt ended."
    )

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
            "description": "Argument values as sent (defaults filled): integer, number and boolean parameters as JSON "
            "numbers and booleans, the others as strings. The job list's argument_value is the string the program receives.",
        }
    )
    def get_args(self, job: Job) -> dict[str, Any]:
        types = job.batch.arg_types
        return {name: as_sent(text, types.get(name)) for name, text in job.args.items()}

    def get_signal(self, job: Job) -> int | None:
        last = self.context.get("last_attempt")
        return last["signal"] if last else None

    @extend_schema_field(UsageSerializer(allow_null=True))
    def get_usage(self, job: Job) -> dict[str, Any] | None:
        last = self.context.get("last_attempt")
        return {name: last[name] for name in UsageSerializer._declared_fields} if last else None

    def get_reason(self, job: Job) -> str:
        waiting = self.context.get("waiting")
        return waiting.reason if waiting is not None else job.reason

    def get_queue_position(self, job: Job) -> int | None:
        waiting = self.context.get("waiting")
        return waiting.position if waiting is not None else None

    @extend_schema_field(JobHardwareSerializer)
    def get_hardware(self, job: Job) -> dict[str, Any]:
        # The batch's filesystem ids come in the context (batches.selectors.batch_filesystem_ids).
        return {
            "filesystems": [str(fs_id) for fs_id in self.context["filesystem_ids"]],
            "memory": job.batch.memory,
            "cpu": job.batch.cpu,
        }


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["from_status", "to_status", "reason", "attempt", "time"]


class _SpreadSerializer(serializers.Serializer):
    min = serializers.FloatField(allow_null=True)
    median = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)
    total = serializers.FloatField(allow_null=True)


class _PeakSerializer(serializers.Serializer):
    peak = serializers.FloatField(allow_null=True)
    median = serializers.FloatField(allow_null=True)


class BatchUsageSerializer(serializers.Serializer):
    """What a batch's ended attempts used, as `seff` reports it (jobs.usage_report). A
    figure over no measured attempt is null."""

    batch_id = serializers.UUIDField()
    jobs_ended = serializers.IntegerField(help_text="Its jobs SUCCEEDED or FAILED.")
    attempts = serializers.IntegerField(help_text="Its ended attempts, retried ones included: what the figures cover.")
    cpus = serializers.IntegerField(help_text="Cores each job asked for.")
    memory_mib = serializers.IntegerField(help_text="Memory each job asked for, MiB.")
    cpu_seconds = serializers.FloatField(allow_null=True, help_text="User + system cpu time of every attempt, seconds.")
    cpu_efficiency = serializers.FloatField(
        allow_null=True, help_text="cpu_seconds over the sum of each attempt's elapsed seconds x cpus (1.0: every core busy all along)."
    )
    max_rss_mib = _PeakSerializer(help_text="The largest peak resident memory of an attempt, and the median of the peaks, MiB.")
    memory_efficiency = serializers.FloatField(
        allow_null=True, help_text="The mean over attempts of their peak resident memory over the memory they asked for."
    )
    elapsed_seconds = _SpreadSerializer(help_text="The attempts' wall-clock run times: min, median, max and total.")
    reason_codes = serializers.DictField(child=serializers.IntegerField(), help_text="Attempts per reason_code.")


class BatchStatusSerializer(serializers.Serializer):
    """Jobs of the batch per status."""

    submitted = serializers.IntegerField()
    pending = serializers.IntegerField()
    runnable = serializers.IntegerField()
    starting = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()


assert {f.upper() for f in BatchStatusSerializer._declared_fields} == set(Status.values)  # noqa: S101


class FeedEventSerializer(serializers.Serializer):
    """One event of the feed (GET /events): a job's state change, or a batch's last job
    ending (`batch.finished`)."""

    id = serializers.IntegerField(help_text="Unique and increasing: resume with `?after=` this id.")
    type = serializers.CharField(
        help_text="`job.<new status in lower case>` (`job.pending`, `job.runnable`, `job.starting`, `job.running`, "
        "`job.succeeded`, `job.failed`) or `batch.finished`."
    )
    batch_id = serializers.UUIDField()
    job_id = serializers.UUIDField(allow_null=True, help_text="null for batch.finished.")
    from_status = serializers.ChoiceField(choices=Status.choices, allow_null=True, help_text="null for batch.finished.")
    to_status = serializers.ChoiceField(choices=Status.choices, allow_null=True, help_text="null for batch.finished.")
    reason = serializers.CharField(allow_blank=True, help_text="Why, as the job's `reason` gives it (may be empty).")
    attempt = serializers.IntegerField(allow_null=True, help_text="The job's attempt number after the change; null for batch.finished.")
    time = serializers.DateTimeField()
    counts = BatchStatusSerializer(allow_null=True, help_text="batch.finished: the batch's jobs per status; null otherwise.")
