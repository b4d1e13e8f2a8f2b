"""Shapes of tools, filesystems and batches, as the seed names them."""

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.models import Batch, BatchDependency
from batches.retry_rules import MAX_EXIT_CODES, MAX_MEMORY_FACTOR, MAX_RULES
from batches.selectors import BATCH_ROW
from batches.services import MAX_DEPENDENCIES, MAX_RUNNING_BOUND, PRIORITY_BOUND
from core.reason_codes import RULE_REASONS


class ToolRefSerializer(serializers.Serializer):
    tool_id = serializers.UUIDField(source="id")
    tool_name = serializers.CharField(source="name")
    tool_description = serializers.CharField(source="description")


class ParameterSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["string", "integer", "number", "boolean", "choice", "path"])
    required = serializers.BooleanField()
    default = serializers.JSONField(required=False)
    choices = serializers.ListField(child=serializers.CharField(), required=False)
    description = serializers.CharField(required=False)


class ToolSerializer(ToolRefSerializer):
    """A tool a user can run: the seed's tool reference plus how to call it."""

    command = serializers.ListField(
        child=serializers.CharField(), help_text="argv template; `{name}` is replaced by the argument, never run by a shell."
    )
    parameters = serializers.DictField(child=ParameterSerializer())
    timeout_seconds = serializers.IntegerField(allow_null=True, help_text="Default wall-clock limit per attempt.")


class FilesystemRefSerializer(serializers.Serializer):
    filesystem_id = serializers.UUIDField(source="id")
    filesystem_name = serializers.CharField(source="name")


class FilesystemSerializer(FilesystemRefSerializer):
    description = serializers.CharField()
    path = serializers.CharField()
    read_only = serializers.BooleanField()


class BatchHardwareSerializer(serializers.Serializer):
    filesystem_list = serializers.SerializerMethodField()
    cpu = serializers.IntegerField()
    memory = serializers.IntegerField(help_text="MiB per job.")

    @extend_schema_field(FilesystemRefSerializer(many=True))
    def get_filesystem_list(self, batch: Batch) -> list[dict[str, Any]]:
        # .all() reads the prefetch cache, so a page of batches stays at two queries.
        return FilesystemRefSerializer(batch.filesystems.all(), many=True).data


class DependencySerializer(serializers.Serializer):
    batch_id = serializers.UUIDField(help_text="A batch of the caller's that existed before this one.")
    condition = serializers.ChoiceField(
        choices=BatchDependency.Condition.choices,
        help_text="`succeeded`: every job of that batch SUCCEEDED; `ended`: every job of it SUCCEEDED or FAILED.",
    )


_ON_EXIT_CODE = "Exit codes this rule matches (an attempt that exited with one of them)."
_ON_REASON = f"The `reason_code` this rule matches, one of: {', '.join(sorted(RULE_REASONS))}."
_ACTION = "`retry`: run it again while attempts are left; `exit`: end the job FAILED now."
_MEMORY_FACTOR = "On an `out_of_memory` rule that retries: the next attempt asks this much more memory (up to the site's maximum)."


class RetryRuleSerializer(serializers.Serializer):
    on_exit_code = serializers.ListField(child=serializers.IntegerField(), required=False, help_text=_ON_EXIT_CODE)
    on_reason = serializers.CharField(required=False, help_text=_ON_REASON)
    action = serializers.ChoiceField(choices=["retry", "exit"], help_text=_ACTION)
    memory_factor = serializers.FloatField(required=False, help_text=_MEMORY_FACTOR)


class RetrySerializer(serializers.Serializer):
    attempts = serializers.IntegerField(source="max_attempts", help_text="Attempts per job (the same as `max_attempts`).")
    rules = RetryRuleSerializer(
        source="retry_rules", many=True, help_text="Checked in order when an attempt fails; the first that matches decides."
    )


# Formats times as the API does (REST_FRAMEWORK's DATETIME_FORMAT).
_TIME = serializers.DateTimeField()


class BatchSerializer(serializers.ModelSerializer):
    batch_id = serializers.UUIDField(source="id")
    batch_tool = ToolRefSerializer(source="tool")
    n_jobs = serializers.IntegerField()
    hardware = BatchHardwareSerializer(source="*")
    depends_on = DependencySerializer(
        many=True, read_only=True, help_text="The batches whose end this batch's jobs wait for (empty: none)."
    )
    retry = RetrySerializer(source="*", help_text="How failed attempts are retried: the attempts and the rules (empty: none).")

    class Meta:
        model = Batch
        fields = [
            "batch_id",
            "batch_tool",
            "n_jobs",
            "hardware",
            "name",
            "max_attempts",
            "retry",
            "timeout_seconds",
            "priority",
            "max_running",
            "depends_on",
            "create_time",
        ]

    def to_representation(self, batch: Batch) -> dict[str, Any]:
        row = {name: getattr(batch, name) for name in BATCH_ROW}
        row.update(tool_name=batch.tool.name, tool_description=batch.tool.description)
        # .all() reads the prefetch cache (batches.selectors.user_batches).
        dependencies = [(d.depends_on_id, d.condition) for d in batch.dependencies.all()]
        return batch_representation(row, [(fs.id, fs.name) for fs in batch.filesystems.all()], dependencies=dependencies)


def batch_representation(row: dict[str, Any], filesystems: list[tuple[Any, str]], *, dependencies: list[tuple[Any, str]]) -> dict[str, Any]:
    """The Batch shape (the fields BatchSerializer declares, which the schema documents)
    written out by hand from a row of `batches.selectors.user_batch_rows`, its
    filesystems' (id, name) and its `dependencies` ((batch id, condition)): a serializer
    per batch (and per filesystem) made a page of 1,000 batches 90 times its query.
    tests/test_api_contract.py pins the shape."""
    return {
        "batch_id": str(row["id"]),
        "batch_tool": {"tool_id": str(row["tool_id"]), "tool_name": row["tool_name"], "tool_description": row["tool_description"]},
        "n_jobs": row["n_jobs"],
        "hardware": {
            "filesystem_list": [{"filesystem_id": str(fs_id), "filesystem_name": fs_name} for fs_id, fs_name in filesystems],
            "cpu": row["cpu"],
            "memory": row["memory"],
        },
        "name": row["name"],
        "max_attempts": row["max_attempts"],
        "retry": {"attempts": row["max_attempts"], "rules": row["retry_rules"]},
        "timeout_seconds": row["timeout_seconds"],
        "priority": row["priority"],
        "max_running": row["max_running"],
        "depends_on": [{"batch_id": str(batch_id), "condition": condition} for batch_id, condition in dependencies],
        "create_time": _TIME.to_representation(row["create_time"]),
    }


NO_NUL = RegexValidator(r"^[^\x00]+$", message="must not contain NUL characters")


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, nothing else: DRF's own field also takes "2", 2.0 and "2.0"."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else: DRF's own field also takes numbers."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """An id as a JSON string: DRF's own field reads the integer 5 as the uuid
    00000000-0000-0000-0000-000000000005."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class KnownFieldsOnly(serializers.Serializer):
    """Refuses a field it does not declare, by name: `"hardware": {"gpu": 1}` was
    dropped silently and the jobs ran without what the client asked for."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in self.fields]
            if unknown:
                known = ", ".join(self.fields)
                raise serializers.ValidationError({key: [f"unknown field (this object takes: {known})"] for key in unknown[:10]})
        return super().to_internal_value(data)


class HardwareInSerializer(KnownFieldsOnly):
    # The bounds are the service's (batches.services.check_submission), shown here so the
    # schema tells clients what the server accepts.
    cpu = StrictIntegerField(min_value=1, max_value=settings.BATCHES_MAX_CPU, help_text="Whole cores per job.")
    memory = StrictIntegerField(min_value=1, max_value=settings.BATCHES_MAX_MEMORY_MIB, help_text="MiB per job.")
    filesystem_list = serializers.ListField(child=StrictUUIDField(), default=list, help_text="Ids of filesystems to expose to each job.")


class JobInSerializer(KnownFieldsOnly):
    args = serializers.DictField(
        child=serializers.JSONField(), default=dict, help_text="Argument name -> value, checked against the tool's parameters."
    )


class DependencyInSerializer(KnownFieldsOnly):
    """A batch this one waits for, and for what (jobs.dependencies decides)."""

    batch_id = StrictUUIDField(help_text="A batch of yours that exists now (so dependencies never form a cycle).")
    condition = serializers.ChoiceField(
        choices=BatchDependency.Condition.choices,
        help_text="`succeeded`: wait until every job of that batch SUCCEEDED; `ended`: until every one SUCCEEDED or FAILED.",
    )


class RetryRuleInSerializer(KnownFieldsOnly):
    """One rule; which combinations are allowed is batches.retry_rules' to say."""

    on_exit_code = serializers.ListField(
        child=StrictIntegerField(min_value=0, max_value=255),
        required=False,
        min_length=1,
        max_length=MAX_EXIT_CODES,
        help_text=_ON_EXIT_CODE,
    )
    on_reason = StrictCharField(required=False, max_length=40, help_text=_ON_REASON)
    action = serializers.ChoiceField(choices=["retry", "exit"], help_text=_ACTION)
    memory_factor = serializers.FloatField(required=False, min_value=1.0, max_value=MAX_MEMORY_FACTOR, help_text=_MEMORY_FACTOR)


def _rule_schema(match: dict[str, Any], required: list[str], action: list[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    properties = {**match, "action": {"type": "string", "enum": action, "description": _ACTION}, **(extra or {})}
    return {"type": "object", "properties": properties, "required": [*required, "action"], "additionalProperties": False}


_EXIT_CODES = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}, "minItems": 1, "maxItems": MAX_EXIT_CODES}
_RULE_SCHEMA = {
    "oneOf": [
        _rule_schema({"on_exit_code": {**_EXIT_CODES, "description": _ON_EXIT_CODE}}, ["on_exit_code"], ["retry", "exit"]),
        _rule_schema(
            {"on_reason": {"type": "string", "enum": sorted(RULE_REASONS), "description": _ON_REASON}}, ["on_reason"], ["retry", "exit"]
        ),
        _rule_schema(
            {"on_reason": {"type": "string", "enum": ["out_of_memory"]}},
            ["on_reason", "memory_factor"],
            ["retry"],
            {
                "memory_factor": {
                    "type": "number",
                    "minimum": 1,
                    "exclusiveMinimum": True,
                    "maximum": MAX_MEMORY_FACTOR,
                    "description": _MEMORY_FACTOR,
                }
            },
        ),
    ]
}


@extend_schema_field({"type": "array", "items": _RULE_SCHEMA, "maxItems": MAX_RULES})
class RetryRulesField(serializers.ListField):
    """The rules list; the schema says which shapes a rule takes (one of three), which
    batches.retry_rules checks again with messages naming the field."""


class RetryInSerializer(KnownFieldsOnly):
    attempts = StrictIntegerField(
        min_value=1, max_value=settings.BATCHES_MAX_ATTEMPTS, help_text="Attempts per job, as `max_attempts` (give one of the two)."
    )
    rules = RetryRulesField(
        child=RetryRuleInSerializer(),
        required=False,
        default=list,
        max_length=MAX_RULES,
        help_text=(
            "Checked in order when an attempt fails (AWS Batch's evaluateOnExit): the first whose `on_exit_code` or "
            "`on_reason` matches decides, `retry` (while attempts are left) or `exit` (FAILED now). A failure no rule "
            "matches is retried while attempts are left. Infrastructure failures (node failure, preemption, a lost "
            "worker...) never use an attempt and no rule applies to them."
        ),
    )


class JobsField(serializers.ListField):
    """The jobs list: `[{"args": {...}}, ...]`. Its length is checked before its items
    (DRF's ListField validates every item first: a million empty jobs cost a minute of
    CPU before the 400), and the shape by hand, item by item, with DRF's own messages (a
    JobInSerializer per job was a third of a 100,000-job POST). The child stays declared, for the schema. What each argument may
    be is the tool's business (batches.parameters)."""

    _not_an_object = serializers.Serializer.default_error_messages["invalid"]
    _not_a_dict = serializers.DictField.default_error_messages["not_a_dict"]

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        if isinstance(data, (str, dict)) or not hasattr(data, "__iter__"):
            self.fail("not_a_list", input_type=type(data).__name__)
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        if not data and not self.allow_empty:
            self.fail("empty")
        if self.min_length is not None and len(data) < self.min_length:
            self.fail("min_length", min_length=self.min_length)
        jobs: list[dict[str, Any]] = []
        errors: dict[int, Any] = {}
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                errors[index] = {"non_field_errors": [self._not_an_object.format(datatype=type(item).__name__)]}
                continue
            unknown = [key for key in item if key != "args"]
            if unknown:
                errors[index] = {key: ["unknown field (a job takes: args)"] for key in unknown[:10]}
                continue
            args = item.get("args", {})
            if not isinstance(args, dict):
                errors[index] = {"args": [self._not_a_dict.format(input_type=type(args).__name__)]}
                continue
            jobs.append({"args": args})
        if errors:
            raise serializers.ValidationError(errors)
        return jobs


class BatchSubmissionSerializer(KnownFieldsOnly):
    tool_id = StrictUUIDField()
    hardware = HardwareInSerializer()
    jobs = JobsField(child=JobInSerializer(), allow_empty=False, min_length=1, max_length=settings.BATCHES_MAX_JOBS_PER_BATCH)
    # The pattern only documents what DRF's CharField already refuses (NUL characters),
    # so clients and fuzzers know a schema-valid name is an accepted one.
    name = StrictCharField(max_length=200, required=False, default="", allow_blank=True, validators=[NO_NUL])
    max_attempts = StrictIntegerField(
        required=False,
        default=1,
        min_value=1,
        max_value=settings.BATCHES_MAX_ATTEMPTS,
        help_text="Attempts per job; a failed attempt with attempts left is retried.",
    )
    timeout_seconds = StrictIntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=settings.BATCHES_MAX_TIMEOUT_SECONDS,
        help_text="Wall-clock limit per attempt in seconds; default: the tool's.",
    )
    priority = StrictIntegerField(
        required=False,
        default=0,
        min_value=-PRIORITY_BOUND,
        max_value=PRIORITY_BOUND,
        help_text="Among your batches, higher runs first (then older first); other users' work is shared fairly whatever it says.",
    )
    max_running = StrictIntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=MAX_RUNNING_BOUND,
        help_text="At most this many of the batch's jobs run at once; default: no limit.",
    )
    depends_on = serializers.ListField(
        child=DependencyInSerializer(),
        required=False,
        default=list,
        max_length=MAX_DEPENDENCIES,
        help_text=(
            "Batches of yours (existing, undeleted, each once) this batch's jobs wait for: they stay PENDING until each "
            "has `succeeded` (every job SUCCEEDED) or `ended` (every job SUCCEEDED or FAILED), and end FAILED once a "
            "condition can no longer hold (a job of a batch asked to succeed FAILED, or that batch was deleted)."
        ),
    )
    retry = RetryInSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="Attempts and retry rules; without it, `max_attempts` alone: every failure is retried while attempts are left.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        retry = attrs.get("retry")
        if retry and "max_attempts" in self.initial_data and self.initial_data["max_attempts"] != retry["attempts"]:
            raise serializers.ValidationError(
                {"retry": {"attempts": [f"is {retry['attempts']} but max_attempts is {attrs['max_attempts']}: give one of the two"]}}
            )
        return attrs
