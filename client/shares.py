"""Who runs next, from a terminal: `batches shares` (GET /shares) and `batches why JOB`
(a job's status, `reason` and `queue_position` from its JobDetail)."""

from typing import Any

import click

from client.common import ENDED, print_json, print_table, service, table
from client.ids import ID, job_path

STARTED = ("STARTING", "RUNNING")


def percent(part: float) -> str:
    return f"{part * 100:.1f}%"


def span(seconds: float) -> str:
    """A half-life as people say it: `1 h`, `30 min`, `90 s`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:g} s"


@click.command(
    short_help="Fair share: weights, usage, shares.",
    help="Fair share: weights, decayed usage, fair and current shares, running and waiting jobs (an operator sees every user).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def shares(ctx: click.Context, as_json: bool) -> None:
    api = service(ctx)
    response = api.request("GET", "/shares")
    found = api.json(response)
    if as_json:
        return print_json(found)
    try:
        half_life = span(float(response.headers["X-Fairshare-Half-Life"]))
    except (KeyError, ValueError):
        half_life = "?"
    usage = f"usage (cpu-s, half-life {half_life})"
    listed = table("user", "group", "weight", usage, "fair share", "current share", "running", "cpus", "waiting")
    for share in found:
        group = f"{share['group']} (weight {share['group_weight']})" if share.get("group") else "-"
        listed.add_row(
            share["username"],
            group,
            str(share["weight"]),
            f"{share['usage_cpu_seconds']:,.0f}",
            percent(share["fair_share"]),
            percent(share["current_share"]),
            str(share["running_jobs"]),
            str(share["running_cpus"]),
            str(share["waiting_jobs"]),
        )
    print_table(listed)


def place(detail: dict[str, Any]) -> str:
    """Where the job stands in line, in words."""
    position = detail.get("queue_position")
    if position is not None:
        return "next to start" if position == 1 else f"{position:,} (1 = next to start)"
    if detail["status"] in ENDED:
        return "not in line: it has ended"
    if detail["status"] in STARTED:
        return "not in line: it has started"
    return "not in line: held by what its reason says"


@click.command(
    short_help="Why a job waits, and its place in line.",
    help="Why a job is where it is: its status, its reason and its place in line. JOB alone (a whole id), or BATCH JOB.",
)
@click.argument("ids", nargs=-1, required=True, metavar="[BATCH] JOB", type=ID)
@click.option("--json", "as_json", is_flag=True, help="The job's JobDetail, as the API gives it.")
@click.pass_context
def why(ctx: click.Context, ids: tuple[str, ...], as_json: bool) -> None:
    api = service(ctx)
    detail = api.get(job_path(api, ids))
    if as_json:
        return print_json(detail)
    # Plain lines, never folded: a reason with the fair-share figures is long.
    click.echo(f"job       {detail['job_id']}")
    click.echo(f"status    {detail['status']}")
    click.echo(f"reason    {detail.get('reason') or '-'}")
    click.echo(f"position  {place(detail)}")
