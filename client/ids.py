"""Short ids: what the client shows of a batch or job id, and how it finds the id again.

Ids are time-ordered UUIDv7 (the first twelve digits are the creation time in ms), so
batches made the same hour share their prefixes. What stays apart is the end: the last
twelve hex digits (the UUID's last group, 48 random bits) are the short form, the one
the admin shows (`…` and the same twelve digits). Every list and message shows it.

An id is taken whole (with or without dashes, any case) or as any prefix or suffix of
at least four hex digits (`…` or `...` in front: a suffix only, as pasted from the
admin). Resolving a short one reads lists through the API:

- a batch: the caller's batch list, 1,000 batches a request (an account of 100,000
  batches: 100 requests);
- a job: its batch's job list, 1,000 jobs a request, so a short job id needs its batch
  (`BATCH JOB`; a whole job id works alone). The short form (or longer) is taken as
  unique at its first match (48 random bits: one chance in 280,000,000 of another job
  of a 1,000,000-job batch sharing it); a shorter one is checked against the whole list.
  At most `JOB_SCAN_LIMIT` jobs are read: past that, give the whole id (`--json`).

No match is an error like a 404 (exit 1); several matches are listed, exit 2.
"""

import re
import uuid
from collections.abc import Callable
from typing import Any

import click

from client.api import Api, ApiError

SHORT = 12
JOB_SCAN_LIMIT = 20_000
_SHAPE = re.compile(r"^(?:…|\.\.\.)?[0-9A-Fa-f-]+$")


class AmbiguousId(ApiError):
    """A short id the client cannot settle on one id (several match, or too many jobs
    to read): a mistake on the command line, exit status 2."""

    exit_code = 2


def short(full: str) -> str:
    """The short form of an id: its last twelve hex digits."""
    return str(full).replace("-", "")[-SHORT:]


class Identifier(click.ParamType):
    """A batch or job id, whole or short (see the module). Only hex digits and dashes
    pass: anything else would change the URL it goes into (an empty id made `rm` send
    DELETE /batches/, which deletes every batch; `../tools` reached another route).
    A whole id comes back in its canonical form, a short one as given."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        digits = _digits(value) if isinstance(value, str) and _SHAPE.match(value) else ""
        if len(digits) == 32 and not value.startswith(("…", "...")):
            try:
                return str(uuid.UUID(value))
            except ValueError:
                pass
        if not 4 <= len(digits) < 32:
            self.fail(
                f"{value!r} is not an id (a uuid, or at least 4 of its first or last hex digits, as `batches ls` shows them)", param, ctx
            )
        return value


ID = Identifier()


def _digits(value: str) -> str:
    return value.removeprefix("…").removeprefix("...").replace("-", "").lower()


def is_whole(given: str) -> bool:
    """Whether `given` is a whole id (as Identifier returns one), needing no lookup."""
    return len(given) == 36 and given.count("-") == 4


def matches(given: str, full: str) -> bool:
    """Whether the short id `given` is a prefix or a suffix of `full` (only a suffix
    with `…` in front)."""
    digits, whole = _digits(given), full.replace("-", "").lower()
    return whole.endswith(digits) or (not given.startswith(("…", "...")) and whole.startswith(digits))


def _one(given: str, kind: str, where: str, found: list[dict[str, Any]], key: str, describe: Callable[[dict[str, Any]], str]) -> str:
    if not found:
        raise ApiError(f"no {kind} {where} has an id that starts or ends with {given!r}")
    if len(found) > 1:
        rows = "\n".join(f"  {item[key]}  {describe(item)}".rstrip() for item in found[:20])
        more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
        kinds = "batches" if kind == "batch" else f"{kind}s"
        raise AmbiguousId(f"{given!r} matches {len(found)} {kinds} {where}; give more of its digits:\n{rows}{more}")
    return str(found[0][key])


def _batch_line(batch: dict[str, Any]) -> str:
    return f"{batch['batch_tool']['tool_name']}  {batch['create_time']}  {batch.get('name') or ''}"


def resolve_batch(api: Api, given: str) -> str:
    """The whole id of the caller's batch that `given` names (a whole id is not looked up)."""
    if is_whole(given):
        return given
    found = [batch for batch in api.pages("/batches") if matches(given, batch["batch_id"])]
    return _one(given, "batch", "of yours", found, "batch_id", _batch_line)


def _job_line(job: dict[str, Any]) -> str:
    arguments = " ".join(f"{a['argument_key']}={a['argument_value']}" for a in job["job_argument_list"])
    return f"{job['status']}  {arguments}"


def resolve_job(api: Api, batch: str, given: str) -> str:
    """The whole id of the job of `batch` (a whole id) that `given` names."""
    if is_whole(given):
        return given
    found: list[dict[str, Any]] = []
    for n, job in enumerate(api.pages(f"/batches/{batch}/jobs"), 1):
        if n > JOB_SCAN_LIMIT:
            raise AmbiguousId(
                f"{given!r}: the client reads at most {JOB_SCAN_LIMIT:,} jobs of a batch to find a short job id "
                f"({len(found)} matched there); give the job's whole id (`batches jobs {short(batch)} --json` prints them)"
            )
        if matches(given, job["job_id"]):
            found.append(job)
            if len(_digits(given)) >= SHORT:
                break  # the short form is unique in practice: no need to read the rest
    return _one(given, "job", f"of batch {short(batch)}", found, "job_id", _job_line)


def job_path(api: Api, ids: tuple[str, ...]) -> str:
    """A job's route from `JOB` (a whole id) or `BATCH JOB` (either may be short)."""
    if len(ids) > 2:
        raise click.UsageError("give a job id, or a batch id and a job id")
    if len(ids) == 1:
        if not is_whole(ids[0]):
            raise click.UsageError(f"{ids[0]!r}: a short job id needs its batch (BATCH JOB); a whole job id works alone")
        return f"/jobs/{ids[0]}"
    batch = resolve_batch(api, ids[0])
    return f"/batches/{batch}/jobs/{resolve_job(api, batch, ids[1])}"
