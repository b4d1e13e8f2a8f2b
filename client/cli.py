"""`batches`: the service from a terminal.

    batches tools
    batches submit echo --arg message=hi --sweep n=1,2,3 [--from-file jobs.csv|jobs.jsonl] [--watch]
    batches ls [--last N|--all] | status BATCH | watch BATCH | jobs BATCH [--status FAILED] | usage BATCH
    batches logs [BATCH] JOB [-f] | why [BATCH] JOB
    batches shares
    batches events [-f] [--cursor-file FILE] [--type job.failed]
    batches cancel BATCH [JOB] | retry BATCH | rm BATCH... [--yes]

`tools`, `ls`, `status`, `jobs`, `submit`, `why`, `shares`, `usage`, `cancel` and `retry` take
`--json` (the API's own JSON, for scripts). Ids are shown short (the last 12 hex digits,
as the admin shows them) and taken whole or as any unambiguous prefix or suffix (a short
job id with its batch: BATCH JOB); see client/ids.py. Tools and filesystems are named by
name or id; values are typed by the tool's parameters. An error is one line on stderr
and a non-zero exit (2: a mistake on the command line, an ambiguous id); `watch` exits 0
only when every job of the batch succeeded, `logs -f` 1 when the job FAILED.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from client import acting, events, follow, shares, usage
from client.api import Api, ApiError
from client.common import STATES, batch_state, counts_line, out, print_json, print_table, service, table
from client.ids import ID, resolve_batch, short
from client.jobfiles import build_jobs, pairs
from client.jobfiles import jobs_from_file as _jobs_from_file

LS_LAST = 100


class _Group(click.Group):
    """API errors as one line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            click.echo(f"batches: {exc}", err=True)
            ctx.exit(exc.exit_code)


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
    jobs = build_jobs(pairs(args, "--arg"), pairs(sweeps, "--sweep"), rows, chosen.get("parameters", {}))
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
        out.print(f"submitted {batch['n_jobs']} job(s) of {chosen['tool_name']}: batch {short(batch['batch_id'])}")
    if then_watch:
        ctx.invoke(follow.watch, batch=batch["batch_id"])


# -- following --------------------------------------------------------------------------
def _with_counts(api: Api, batches: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """Each batch with its BatchStatus (one GET each, a few at once), without those
    deleted meanwhile."""

    def counted(batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]] | None:
        try:
            return batch, api.get(f"/batches/{batch['batch_id']}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [found for found in pool.map(counted, batches) if found is not None]


@main.command(
    name="ls",
    help="Your batches, oldest first: each one's state (waiting, running, succeeded, failed) and progress "
    "(jobs ended of all, failed). The newest 100 unless --last or --all; --json: every batch, as the API lists them.",
)
@click.option("--last", type=click.IntRange(min=1), default=None, help="Only the newest N batches (default 100).")
@click.option("--all", "show_all", is_flag=True, help="Every batch (one request per batch for its counts).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_batches(ctx: click.Context, last: int | None, show_all: bool, as_json: bool) -> None:
    api = service(ctx)
    found = list(api.pages("/batches"))
    if as_json:
        return print_json(found[-last:] if last else found)
    shown = found if show_all else found[-(last or LS_LAST) :]
    if len(shown) < len(found):
        click.echo(f"batches: the newest {len(shown):,} of {len(found):,} batches (--all for every one)", err=True)
    listed = table("batch", "tool", "state", "progress", "failed", "name", "created")
    for batch, counts in _with_counts(api, shown):
        ended = counts["succeeded"] + counts["failed"]
        listed.add_row(
            short(batch["batch_id"]),
            batch["batch_tool"]["tool_name"],
            batch_state(counts),
            f"{ended}/{sum(counts.values())}",
            str(counts["failed"]),
            batch["name"],
            batch["create_time"],
        )
    print_table(listed)


@main.command(help="Job counts per state.")
@click.argument("batch", type=ID)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, batch: str, as_json: bool) -> None:
    api = service(ctx)
    counts = api.get(f"/batches/{resolve_batch(api, batch)}")
    if as_json:
        return print_json(counts)
    out.print(f"{sum(counts.values())} job(s), {batch_state(counts)}: {counts_line(counts)}")


@main.command(help="Jobs of a batch, in submission order.")
@click.argument("batch", type=ID)
@click.option("--status", "state", type=click.Choice([s.upper() for s in STATES], case_sensitive=False), help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs(ctx: click.Context, batch: str, state: str | None, as_json: bool) -> None:
    api = service(ctx)
    found = list(api.pages(f"/batches/{resolve_batch(api, batch)}/jobs", status=state.upper() if state else None))
    if as_json:
        return print_json(found)
    listed = table("job", "status", "arguments", "reason")
    for job in found:
        arguments = " ".join(f"{a['argument_key']}={a['argument_value']}" for a in job["job_argument_list"])
        listed.add_row(short(job["job_id"]), job["status"], arguments, job["reason"])
    print_table(listed)


for command in (
    follow.watch,
    follow.logs,
    acting.cancel,
    acting.retry,
    acting.remove,
    shares.shares,
    shares.why,
    usage.usage,
    events.events,
):
    main.add_command(command)
