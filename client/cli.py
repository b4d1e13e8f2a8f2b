"""`batches`: the service from a terminal.

    batches tools
    batches submit echo --arg message=hi --sweep n=1,2,3 [--from-file jobs.csv|jobs.jsonl] [--watch]
    batches ls | status BATCH | watch BATCH | jobs BATCH [--status FAILED]
    batches logs [BATCH] JOB [-f] | why [BATCH] JOB
    batches shares
    batches events [-f] [--cursor-file FILE] [--type job.failed]
    batches cancel BATCH [JOB] | retry BATCH | rm BATCH

`tools`, `ls`, `status`, `jobs`, `submit`, `why` and `shares` take `--json` (the API's own JSON, for
scripts). Tools and filesystems are named by name or id; values are typed by the tool's
parameters. An error is one line on stderr and a non-zero exit; `watch` exits 0 only
when every job of the batch succeeded.
"""

import csv
import io
import itertools
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from client import events, shares
from client.api import ApiError
from client.common import ID, STATES, job_path, out, print_json, print_table, service, table


class _Group(click.Group):
    """API errors as one line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            click.echo(f"batches: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, help=__doc__.split("\n\n")[0])
@click.option("--url", envvar="BATCHES_URL", help="The service (default http://127.0.0.1:8000).")
@click.option("--token", envvar="BATCHES_TOKEN", help="An API token (issue_token).")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None) -> None:
    ctx.ensure_object(dict)
    ctx.obj.update(url=url, token=token)


# -- catalog ----------------------------------------------------------------------------
def _find(items: list[dict[str, Any]], key: str, wanted: str, kind: str) -> dict[str, Any]:
    for item in items:
        if wanted in (item[f"{key}_id"], item[f"{key}_name"]):
            return item
    names = ", ".join(sorted(item[f"{key}_name"] for item in items)) or "none"
    raise ApiError(f"no {kind} {wanted!r} (yours: {names})")


@main.command(help="Tools you can run, with their parameters.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tools(ctx: click.Context, as_json: bool) -> None:
    found = list(service(ctx).pages("/tools"))
    if as_json:
        return print_json(found)
    listed = table("name", "parameters", "description", "id")
    for tool in found:
        parameters = ", ".join(f"{name}:{p['type']}{'' if p.get('required') else '?'}" for name, p in tool.get("parameters", {}).items())
        listed.add_row(tool["tool_name"], parameters, tool["tool_description"], tool["tool_id"])
    print_table(listed)


# -- submitting -------------------------------------------------------------------------
def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        pairs.append((key, rest))
    return pairs


def _jobs_from_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is no part of the first key
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", param_hint="--from-file") from None
    jobs: list[dict[str, Any]]
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise click.BadParameter(f"{path}: the header names {', '.join(twice)} more than once", param_hint="--from-file")
        jobs = []
        for row in reader:
            if None in row:
                raise click.BadParameter(f"{path}: line {reader.line_num} has more fields than the header", param_hint="--from-file")
            if None in row.values():
                raise click.BadParameter(f"{path}: line {reader.line_num} has fewer fields than the header", param_hint="--from-file")
            jobs.append(dict(row))
    else:
        jobs = _jobs_from_jsonl(path, text)
    if not jobs:
        raise click.BadParameter(f"no jobs in {path}", param_hint="--from-file")
    return jobs


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")  # Python's json takes NaN and Infinity


def _jobs_from_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line, parse_constant=_not_json)
        except ValueError as exc:
            raise click.BadParameter(f"{path}:{number}: not JSON ({exc})", param_hint="--from-file") from None
        if not isinstance(item, dict):
            raise click.BadParameter(f"{path}:{number}: not an object", param_hint="--from-file")
        jobs.append(item["args"] if isinstance(item.get("args"), dict) else item)
    return jobs


_INTEGER = re.compile(r"^-?[0-9]+$")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


def _typed(key: str, value: Any, parameters: dict[str, Any]) -> Any:
    """A value typed on the command line or in a CSV file, as the tool's parameter
    `key` takes it (JSON numbers and booleans); JSON lines keep their own types."""
    kind = parameters.get(key, {}).get("type")
    if not isinstance(value, str) or kind not in ("integer", "number", "boolean"):
        return value
    if kind == "boolean":
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if value.lower() in words:
            return words[value.lower()]
        raise click.BadParameter(f"{key}: {value!r} is not a boolean (true or false)")
    # JSON's own shapes (int() and float() also take "1_000", " 5", "nan" and "inf").
    if _INTEGER.match(value):
        if len(value.lstrip("-")) > 4000:
            raise click.BadParameter(f"{key}: an integer of {len(value)} digits is too long")
        return int(value)
    if kind == "integer":
        raise click.BadParameter(f"{key}: {value!r} is not an integer")
    number = float(value) if _NUMBER.match(value) else math.nan
    if not math.isfinite(number):
        raise click.BadParameter(f"{key}: {value!r} is not a finite number")
    return number


def build_jobs(
    args: list[tuple[str, str]], sweeps: list[tuple[str, str]], rows: list[dict[str, Any]], parameters: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One job per row of the file (or one job), times every combination of the sweeps;
    `--arg` values apply to all. Values are typed by the tool's `parameters`."""
    swept = [key for key, _ in sweeps]
    twice = sorted({key for key in swept if swept.count(key) > 1})
    if twice:
        raise click.BadParameter(f"{', '.join(twice)} swept more than once: give all its values in one --sweep", param_hint="--sweep")
    fixed = dict(args)
    combinations = [
        dict(zip([k for k, _ in sweeps], values, strict=True)) for values in itertools.product(*[v.split(",") for _, v in sweeps])
    ]
    jobs = [{**fixed, **row, **combo} for row in (rows or [{}]) for combo in combinations]
    return [{"args": {key: _typed(key, value, parameters or {}) for key, value in job.items()}} for job in jobs]


@main.command(help="Submit a batch of TOOL (a name or an id).")
@click.argument("tool")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="An argument for every job.")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2", help="One job per value (several: every combination).")
@click.option(
    "--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Jobs from a .csv (header: keys) or .jsonl file."
)
@click.option("--cpu", type=int, default=1, show_default=True)
@click.option("--memory", type=int, default=256, show_default=True, help="MiB per job.")
@click.option("--fs", "filesystems", multiple=True, help="A filesystem to expose (name or id).")
@click.option("--name", default="")
@click.option("--max-attempts", type=int, default=1, show_default=True)
@click.option("--timeout", type=int, default=None, help="Seconds per attempt (default: the tool's).")
@click.option("--watch", "then_watch", is_flag=True, help="Then follow it to the end (as `watch`).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(
    ctx: click.Context,
    tool: str,
    args: tuple,
    sweeps: tuple,
    from_file: Path | None,
    cpu: int,
    memory: int,
    filesystems: tuple,
    name: str,
    max_attempts: int,
    timeout: int | None,
    then_watch: bool,
    as_json: bool,
) -> None:  # noqa: E501
    api = service(ctx)
    chosen = _find(list(api.pages("/tools")), "tool", tool, "tool")
    known = list(api.pages("/filesystems")) if filesystems else []
    rows = _jobs_from_file(from_file) if from_file else []
    jobs = build_jobs(_pairs(args, "--arg"), _pairs(sweeps, "--sweep"), rows, chosen.get("parameters", {}))
    body = {
        "tool_id": chosen["tool_id"],
        "hardware": {
            "cpu": cpu,
            "memory": memory,
            "filesystem_list": [_find(known, "filesystem", fs, "filesystem")["filesystem_id"] for fs in filesystems],
        },
        "jobs": jobs,
        "name": name,
        "max_attempts": max_attempts,
        "timeout_seconds": timeout,
    }
    batch = api.post("/batches", body)
    if as_json:
        print_json(batch)
    else:
        out.print(f"submitted {batch['n_jobs']} job(s) of {chosen['tool_name']}: batch {batch['batch_id']}")
    if then_watch:
        ctx.invoke(watch, batch=batch["batch_id"])


# -- following --------------------------------------------------------------------------
@main.command(name="ls", help="Your batches.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_batches(ctx: click.Context, as_json: bool) -> None:
    found = list(service(ctx).pages("/batches"))
    if as_json:
        return print_json(found)
    listed = table("batch", "tool", "jobs", "name", "created")
    for batch in found:
        listed.add_row(batch["batch_id"], batch["batch_tool"]["tool_name"], str(batch["n_jobs"]), batch["name"], batch["create_time"])
    print_table(listed)


def _counts_line(counts: dict[str, int]) -> str:
    return "  ".join(f"{state} {counts[state]}" for state in STATES if counts.get(state))


@main.command(help="Job counts per state.")
@click.argument("batch", type=ID)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, batch: str, as_json: bool) -> None:
    counts = service(ctx).get(f"/batches/{batch}")
    if as_json:
        return print_json(counts)
    out.print(f"{sum(counts.values())} job(s): {_counts_line(counts)}")


@main.command(help="Follow a batch to its end: exit 0 only if every job succeeded.")
@click.argument("batch", type=ID)
@click.option("--every", type=float, default=1.0, show_default=True, help="Seconds between looks.")
@click.pass_context
def watch(ctx: click.Context, batch: str, every: float = 1.0) -> None:
    api = service(ctx)
    counts = api.get(f"/batches/{batch}")
    total = sum(counts.values())
    started, first_done = time.monotonic(), counts["succeeded"] + counts["failed"]
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[detail]}"),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(f"batch {batch[:8]}", total=total, detail="")
        while True:
            done = counts["succeeded"] + counts["failed"]
            elapsed = time.monotonic() - started
            rate = (done - first_done) / elapsed if elapsed > 0 else 0.0
            progress.update(task, completed=done, detail=f"{_counts_line(counts)}  {rate:.1f} jobs/s")
            if done >= total:
                break
            time.sleep(every)
            counts = api.get(f"/batches/{batch}")
    out.print(f"batch {batch}: {_counts_line(counts)}")
    ctx.exit(0 if counts["succeeded"] == total else 1)


@main.command(help="Jobs of a batch, in submission order.")
@click.argument("batch", type=ID)
@click.option("--status", "state", type=click.Choice([s.upper() for s in STATES], case_sensitive=False), help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs(ctx: click.Context, batch: str, state: str | None, as_json: bool) -> None:
    found = list(service(ctx).pages(f"/batches/{batch}/jobs", status=state.upper() if state else None))
    if as_json:
        return print_json(found)
    listed = table("job", "status", "arguments", "reason")
    for job in found:
        arguments = " ".join(f"{a['argument_key']}={a['argument_value']}" for a in job["job_argument_list"])
        listed.add_row(job["job_id"], job["status"], arguments, job["reason"])
    print_table(listed)


@main.command(help="A job's output (stdout and stderr); -f follows it while it runs. JOB alone, or BATCH JOB.")
@click.argument("ids", nargs=-1, required=True, metavar="[BATCH] JOB", type=ID)
@click.option("-f", "--follow", is_flag=True)
@click.option("--every", type=float, default=0.5, show_default=True, help="Seconds between looks when following.")
@click.pass_context
def logs(ctx: click.Context, ids: tuple[str, ...], follow: bool, every: float) -> None:
    path = job_path(ids)
    api = service(ctx)
    offset = 0
    while True:
        detail = api.get(path)  # before the read: a job seen ended has written all
        data, size = api.log(detail["log_id"], offset=offset)
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            offset += len(data)
        if offset < size:
            continue
        if not follow or detail["status"] in ("SUCCEEDED", "FAILED"):
            return
        time.sleep(every)


# -- acting -----------------------------------------------------------------------------
@main.command(help="Cancel a batch's unfinished jobs, or one job.")
@click.argument("batch", type=ID)
@click.argument("job", required=False, type=ID)
@click.pass_context
def cancel(ctx: click.Context, batch: str, job: str | None) -> None:
    path = f"/batches/{batch}/jobs/{job}/cancel" if job else f"/batches/{batch}/cancel"
    result = service(ctx).post(path) or {}
    out.print(f"cancelled: {json.dumps(result)}")


@main.command(help="Run a batch's failed jobs again.")
@click.argument("batch", type=ID)
@click.pass_context
def retry(ctx: click.Context, batch: str) -> None:
    result = service(ctx).post(f"/batches/{batch}/retry") or {}
    out.print(f"retried {result.get('changed', 0)} job(s)")


@main.command(name="rm", help="Delete batches (their jobs are stopped, their logs removed).")
@click.argument("batches", nargs=-1, required=True, type=ID)
@click.pass_context
def remove(ctx: click.Context, batches: tuple[str, ...]) -> None:
    for batch in batches:
        service(ctx).delete(f"/batches/{batch}")
        out.print(f"deleted {batch}")


main.add_command(events.events)
main.add_command(shares.shares)
main.add_command(shares.why)
