"""`batches usage BATCH`: a batch's usage report (GET /batches/<id>/usage) as lines a
person reads, the way Slurm's `seff` prints a job's."""

from typing import Any

import click

from client.common import out, print_json, service
from client.ids import ID, resolve_batch


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def usage_lines(usage: dict[str, Any]) -> list[str]:
    """The report of `usage` (the route's JSON), one figure per line."""
    rss, elapsed = usage["max_rss_mib"], usage["elapsed_seconds"]
    codes = ", ".join(f"{code or '(running)'} {n}" for code, n in sorted(usage["reason_codes"].items(), key=lambda item: -item[1]))
    return [
        f"Batch: {usage['batch_id']}",
        f"Jobs ended: {usage['jobs_ended']} ({usage['attempts']} attempt(s) ended)",
        f"Asked per job: {usage['cpus']} core(s), {usage['memory_mib']} MiB",
        f"CPU used: {_number(usage['cpu_seconds'], ' s', 3)}",
        f"CPU efficiency: {_percent(usage['cpu_efficiency'])} of elapsed x cores",
        f"Max RSS: peak {_number(rss['peak'], ' MiB')}, median {_number(rss['median'], ' MiB')}",
        f"Memory efficiency: {_percent(usage['memory_efficiency'])} of the memory asked (mean)",
        f"Elapsed: min {_number(elapsed['min'], ' s', 3)}, median {_number(elapsed['median'], ' s', 3)}, "
        f"max {_number(elapsed['max'], ' s', 3)}, total {_number(elapsed['total'], ' s', 3)}",
        f"Ended as: {codes or '-'}",
    ]


@click.command(help="What a batch's ended attempts used (cpu, memory, time), as seff shows it.")
@click.argument("batch", type=ID)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def usage(ctx: click.Context, batch: str, as_json: bool) -> None:
    api = service(ctx)
    report = api.get(f"/batches/{resolve_batch(api, batch)}/usage")
    return print_json(report) if as_json else out.print("\n".join(usage_lines(report)))
