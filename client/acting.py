"""Acting on batches: `cancel`, `retry` and `rm`, each answered in a sentence."""

import sys
from typing import Any

import click

from client.api import ApiError
from client.common import out, print_json, service
from client.ids import ID, resolve_batch, resolve_job, short


class Refused(ApiError):
    """A command that will not go on as given (a deletion that needs --yes): exit status 2."""

    exit_code = 2


def cancelled(result: dict[str, Any], *, batch: str, job: str | None) -> str:
    """The cancel routes' `{"changed": N, "stopping": M}` as a sentence."""
    changed, stopping = result.get("changed", 0), result.get("stopping", 0)
    if job:
        if not changed:
            return f"job {short(job)} had ended: nothing to cancel"
        if stopping:
            return f"cancelling job {short(job)}: its attempt is stopping (it is FAILED, Cancelled by user, once it has)"
        return f"cancelled job {short(job)}"
    if not changed:
        return f"batch {short(batch)}: nothing to cancel (every job had ended)"
    still = f"; {stopping} of them still stopping (FAILED once their attempt has stopped)" if stopping else ""
    return f"cancelled {changed} job(s) of batch {short(batch)}{still}"


@click.command(help="Cancel a batch's unfinished jobs, or one job.")
@click.argument("batch", type=ID)
@click.argument("job", required=False, type=ID)
@click.option("--json", "as_json", is_flag=True, help="The API's answer ({changed, stopping}).")
@click.pass_context
def cancel(ctx: click.Context, batch: str, job: str | None, as_json: bool) -> None:
    api = service(ctx)
    batch = resolve_batch(api, batch)
    job = resolve_job(api, batch, job) if job else None
    path = f"/batches/{batch}/jobs/{job}/cancel" if job else f"/batches/{batch}/cancel"
    result = api.post(path) or {}
    if as_json:
        return print_json(result)
    out.print(cancelled(result, batch=batch, job=job))


@click.command(help="Run a batch's failed jobs again.")
@click.argument("batch", type=ID)
@click.option("--json", "as_json", is_flag=True, help="The API's answer ({changed}).")
@click.pass_context
def retry(ctx: click.Context, batch: str, as_json: bool) -> None:
    api = service(ctx)
    batch = resolve_batch(api, batch)
    result = api.post(f"/batches/{batch}/retry") or {}
    if as_json:
        return print_json(result)
    changed = result.get("changed", 0)
    if changed:
        out.print(f"retried {changed} job(s) of batch {short(batch)}")
    else:
        out.print(f"batch {short(batch)}: nothing to retry (no FAILED job)")


def unfinished(counts: dict[str, int]) -> str:
    """`2 running and 1 waiting job(s)` of a BatchStatus, or "" when every job has ended."""
    running = counts["starting"] + counts["running"]
    waiting = counts["submitted"] + counts["pending"] + counts["runnable"]
    parts = [f"{running} running" if running else "", f"{waiting} waiting" if waiting else ""]
    said = " and ".join(part for part in parts if part)
    return f"{said} job(s)" if said else ""


@click.command(
    name="rm",
    help="Delete batches (their jobs are stopped, their logs removed). A batch with running or waiting jobs is "
    "deleted only when you confirm (--yes: without asking; with no terminal to ask on, --yes is needed).",
)
@click.argument("batches", nargs=-1, required=True, type=ID)
@click.option("--yes", "-y", is_flag=True, help="Delete batches with unfinished jobs without asking.")
@click.pass_context
def remove(ctx: click.Context, batches: tuple[str, ...], yes: bool) -> None:
    api = service(ctx)
    chosen = list(dict.fromkeys(resolve_batch(api, batch) for batch in batches))
    busy = {batch: said for batch in chosen if (said := unfinished(api.get(f"/batches/{batch}")))}
    if busy and not yes:
        which = "; ".join(f"batch {short(batch)} has {said}" for batch, said in busy.items())
        if not sys.stdin.isatty():
            raise Refused(f"{which}: pass --yes to delete and stop them (nothing was deleted)")
        if not click.confirm(f"{which}. Delete and stop them?", default=False, err=True):
            click.echo("nothing was deleted", err=True)
            ctx.exit(1)
    for batch in chosen:
        api.delete(f"/batches/{batch}")
        out.print(f"deleted batch {short(batch)}")
