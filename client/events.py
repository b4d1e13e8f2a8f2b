"""`batches events`: the caller's event feed (GET /events) from a terminal, one line per
event; `-f` follows it (long polls, so a quiet feed costs one request per `--wait`
seconds), `--cursor-file` saves the last id printed so a restarted follower goes on
where it stopped, neither repeating nor missing an event."""

import json
from pathlib import Path
from typing import Any

import click

from client.api import ApiError
from client.common import out, service

# Seconds a follower's request waits on the server for news (the server caps it at 60).
WAIT = 25


def line(event: dict[str, Any]) -> str:
    """`412 2026-12-05T08:00:00Z job.failed batch 0192... job 0192... RUNNING -> FAILED (exit code 3)`."""
    where = f"batch {event['batch_id']}"
    if event["job_id"] is None:
        counts = " ".join(f"{state} {n}" for state, n in (event.get("counts") or {}).items() if n)
        return f"{event['id']} {event['time']} {event['type']} {where}: {counts}"
    reason = f" ({event['reason']})" if event["reason"] else ""
    move = f"{event['from_status']} -> {event['to_status']}"
    return f"{event['id']} {event['time']} {event['type']} {where} job {event['job_id']} {move}{reason}"


def _read_cursor(path: Path | None, after: int) -> int:
    if path is None or not path.exists():
        return after
    text = path.read_text().strip()
    if not text.isascii() or not text.isdigit():
        raise ApiError(f"{path}: holds {text[:40]!r}, not an event id")
    return int(text)


def _save_cursor(path: Path | None, cursor: int) -> None:
    if path is None:
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{cursor}\n")
    partial.replace(path)  # atomic: a follower killed meanwhile finds the old id or the new


@click.command(help="Your jobs' state changes and finished batches, oldest first; -f follows them.")
@click.option("-f", "--follow", is_flag=True, help="Keep waiting for new events (Ctrl-C to stop).")
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True, help="Only events after this id.")
@click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path), help="Start after the id saved here; save each id printed.")
@click.option("--type", "types", multiple=True, help="Only these types (job.failed, batch.finished...); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines), as the API gives them.")
@click.pass_context
def events(ctx: click.Context, follow: bool, after: int, cursor_file: Path | None, types: tuple[str, ...], as_json: bool) -> None:
    api = service(ctx)
    cursor = _read_cursor(cursor_file, after)
    while True:
        params = {"after": cursor, "limit": 1000, **({"wait": WAIT} if follow else {})}
        response = api.request("GET", "/events", params=params)
        page = api.json(response)
        for event in page:
            if not types or event["type"] in types:
                if as_json:
                    click.echo(json.dumps(event, separators=(",", ":")))
                else:
                    out.print(line(event), markup=False)
            cursor = event["id"]
            _save_cursor(cursor_file, cursor)
        # Past other users' events too (never back): a quiet follower's cursor stays
        # within the retention, so it is not told 410 for events that were never its.
        through = response.headers.get("X-Events-Through", "")
        if through.isdigit() and int(through) > cursor:
            cursor = int(through)
            _save_cursor(cursor_file, cursor)
        if not page and not follow:
            return
