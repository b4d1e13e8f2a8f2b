"""What the `batches` commands share: the service, batch counts, JSON and tables on stdout."""

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from client.api import Api, Settings

STATES = ["submitted", "pending", "runnable", "starting", "running", "succeeded", "failed"]
WAITING = ("SUBMITTED", "PENDING", "RUNNABLE")
ENDED = ("SUCCEEDED", "FAILED")


out = Console(highlight=False, soft_wrap=True)


def service(ctx: click.Context) -> Api:
    """The service, set up at the first command that calls it (so `--help` needs no token)."""
    root = ctx.find_root().obj
    if "api" not in root:
        root["api"] = Api(Settings.load(url=root["url"], token=root["token"]))
    return root["api"]


def counts_line(counts: dict[str, int]) -> str:
    """A BatchStatus as `running 2  succeeded 5`: the states that have jobs, in order."""
    return "  ".join(f"{state} {counts[state]}" for state in STATES if counts.get(state))


def batch_state(counts: dict[str, int]) -> str:
    """A batch's state in a word, from its BatchStatus: `running` while a job starts or
    runs, `waiting` while jobs wait and none runs, then `succeeded` (every job did) or
    `failed` (every job ended, one or more failed)."""
    total = sum(counts.values())
    if counts["succeeded"] + counts["failed"] >= total:
        return "failed" if counts["failed"] else "succeeded"
    return "running" if counts["starting"] + counts["running"] else "waiting"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(*columns: str) -> Table:
    found = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        found.add_column(column, overflow="fold")
    return found


def print_table(rows: Table) -> None:
    """On a terminal, the table folded to its width; anywhere else (a pipe, a file) one
    line per row however long, without trailing blanks, so `grep` and `awk` see whole
    rows (a console that is no terminal is 80 columns wide and folded long reasons)."""
    if out.is_terminal:
        out.print(rows)
        return
    wide = Console(highlight=False, soft_wrap=True, width=1_000_000, color_system=None, force_terminal=False)
    with wide.capture() as captured:
        wide.print(rows)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())
