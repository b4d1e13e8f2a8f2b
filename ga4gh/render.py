"""A task in TES's shapes, in the three views (the spec's `view` parameter):

- MINIMAL: `id` and `state` only;
- BASIC: everything but each executor log's `stdout` and `stderr`, inputs' `content`
  and each task log's `system_logs`;
- FULL: everything.

Logs: one tesTaskLog per attempt (a retried task has several), with each executor's
start, end and exit code (and, FULL, the tail of its stdout and stderr: the last
10,000 bytes; the whole output is in the job's log, `GET /logs/<log_id>`), the output
files delivered, and `system_logs` naming what the system did: where it ran, why it
failed, what was ignored.
"""

from datetime import datetime
from typing import Any

from ga4gh.models import TaskRecord
from ga4gh.states import tes_state
from jobs.models import Attempt


def rfc3339(when: datetime | str | None) -> str | None:
    if when is None:
        return None
    if isinstance(when, str):
        return when
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_state(record: TaskRecord) -> str:
    job = record.job
    return tes_state(
        status=job.status,
        cancel_requested=job.cancel_requested_at is not None,
        reason=job.reason,
        reason_code=getattr(record, "last_code", None),
    )


def render_task(record: TaskRecord, *, view: str, attempts: list[Attempt]) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": str(record.pk), "state": task_state(record)}
    if view == "MINIMAL":
        return shown
    document = record.document
    for key in ("name", "description", "inputs", "outputs", "resources", "executors", "volumes", "tags"):
        if key in document:
            shown[key] = document[key]
    if view == "BASIC" and "inputs" in shown:
        shown["inputs"] = [{k: v for k, v in item.items() if k != "content"} for item in shown["inputs"]]
    shown["logs"] = [_task_log(record, attempt, full=view == "FULL") for attempt in attempts]
    if not shown["logs"] and view == "FULL" and record.warnings:
        shown["logs"] = [{"logs": [], "outputs": [], "system_logs": list(record.warnings)}]
    shown["creation_time"] = rfc3339(record.creation_time)
    return shown


def _task_log(record: TaskRecord, attempt: Attempt, *, full: bool) -> dict[str, Any]:
    ran = attempt.task_log or {}
    log: dict[str, Any] = {
        "logs": [_executor_log(step, full=full) for step in ran.get("steps", [])],
        "metadata": {
            "attempt": str(attempt.number),
            "node": attempt.node,
            "executor": attempt.executor,
            "job_id": str(record.job_id),
            "log_id": str(record.job.log_id),
        },
        "outputs": ran.get("outputs", []),
    }
    start, end = ran.get("start_time") or rfc3339(attempt.start_time), ran.get("end_time") or rfc3339(attempt.end_time)
    if start:
        log["start_time"] = start
    if end:
        log["end_time"] = end
    if full:
        system = [*record.warnings]
        if attempt.node:
            system.append(f"ran on {attempt.node} ({attempt.executor}), attempt {attempt.number}")
        if attempt.reason:
            system.append(f"{attempt.reason_code}: {attempt.reason}")
        log["system_logs"] = system
    return log


def _executor_log(step: dict[str, Any], *, full: bool) -> dict[str, Any]:
    log = {key: step[key] for key in ("start_time", "end_time") if step.get(key)}
    log["exit_code"] = step.get("exit_code") if step.get("exit_code") is not None else -1
    if full:
        log["stdout"], log["stderr"] = step.get("stdout", ""), step.get("stderr", "")
    return log
