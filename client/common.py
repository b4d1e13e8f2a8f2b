"""What the `batches` commands share: the service, ids, JSON and tables on stdout."""

import json
import re
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from client.api import Api, Settings

STATES = ["submitted", "pending", "runnable", "starting", "running", "succeeded", "failed"]


class Identifier(click.ParamType):
    """A batch or job id as `ls` and `jobs` print them (a uuid). Anything else would
    change the URL it goes into: an empty id made `rm` send DELETE /batches/, which
    deletes every batch; `../tools` reached another route."""

    name = "ID"
    _SHAPE = re.compile(r"^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not isinstance(value, str) or not self._SHAPE.match(value):
            self.fail(f"{value!r} is not an id (a uuid, as `batches ls` and `batches jobs` print them)", param, ctx)
        return value


ID = Identifier()
out = Console(highlight=False, soft_wrap=True)


def service(ctx: click.Context) -> Api:
    """The service, set up at the first command that calls it (so `--help` needs no token)."""
    root = ctx.find_root().obj
    if "api" not in root:
        root["api"] = Api(Settings.load(url=root["url"], token=root["token"]))
    return root["api"]


def job_path(ids: tuple[str, ...]) -> str:
    """A job's route from `JOB` (as `batches jobs` prints it) or `BATCH JOB`."""
    if len(ids) > 2:
        raise click.UsageError("give a job id, or a batch id and a job id")
    return f"/batches/{ids[0]}/jobs/{ids[1]}" if len(ids) == 2 else f"/jobs/{ids[0]}"


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
