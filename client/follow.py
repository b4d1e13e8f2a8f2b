"""Following work to its end: `batches watch BATCH` (a progress bar on stderr) and
`batches logs [BATCH] JOB -f` (the job's output as it comes, what it waits for, and
its final status)."""

import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task
from rich.table import Column
from rich.text import Text

from client.batch_feed import BatchFeed, all_ended
from client.common import ENDED, WAITING, counts_line, out, service
from client.ids import ID, job_path, resolve_batch, short


def clock(seconds: float) -> str:
    """A duration as a clock shows it: `0:07`, `12:30`, `1:02:03`."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def outcome_bar(width: int, *, total: int, succeeded: int, failed: int) -> Text:
    """The bar, jobs by outcome: succeeded green, failed red, the rest grey. (Rich's own
    bar drew every finished job in one colour, red-pink until the very end, even when
    all of them succeeded.) A failure shows however few there are."""
    green = width * succeeded // total if total else 0
    red = (width * (succeeded + failed) // total) - green if total else 0
    if failed and not red:
        red, green = 1, min(green, width - 1)
    bar = Text()
    bar.append("━" * green, style="green")
    bar.append("━" * red, style="red")
    bar.append("━" * (width - green - red), style="grey23")
    return bar


def progress_line(batch: str, counts: dict[str, int], *, elapsed: float, rate: float, width: int) -> Text:
    """The whole progress line, cut to `width`: the batch, the bar, jobs ended of all,
    the time watched and the time left at the rate since watching began (`eta ?` until
    a job has ended), then the counts and the rate, the part a narrow terminal loses."""
    total = sum(counts.values())
    done = counts["succeeded"] + counts["failed"]
    eta = "0:00" if done >= total else clock((total - done) / rate) if rate > 0 else "?"
    head = f"batch {short(batch)} "
    middle = f" {done}/{total}  elapsed {clock(elapsed)}  eta {eta}"
    tail = f"  {counts_line(counts)}  {rate:.1f} jobs/s"
    bar_width = max(10, min(40, width - len(head) - len(middle) - len(tail) - 1))
    line = Text(head)
    line.append_text(outcome_bar(bar_width, total=total, succeeded=counts["succeeded"], failed=counts["failed"]))
    line.append(middle + tail)
    line.truncate(max(width - 1, 20), overflow="ellipsis")
    return line


class _Line(ProgressColumn):
    """The one column of `watch`'s display: the task's line, drawn for the console's width.
    The time watched and the rate are taken at each drawing, so the clock goes on while a
    long poll waits for news."""

    def __init__(self, console: Console) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.console = console

    def render(self, task: Task) -> Text:
        fields = task.fields
        if "counts" not in fields:
            return Text("")
        counts = fields["counts"]
        elapsed = time.monotonic() - fields["started"]
        rate = (counts["succeeded"] + counts["failed"] - fields["first_done"]) / elapsed if elapsed > 0 else 0.0
        return progress_line(fields["batch"], counts, elapsed=elapsed, rate=rate, width=self.console.width)


@click.command(help="Follow a batch to its end: exit 0 only if every job succeeded.")
@click.argument("batch", type=ID)
@click.option(
    "--every",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between looks, at least (a look waits on the server until something changes; "
    "a server without the event feed is polled this often).",
)
@click.pass_context
def watch(ctx: click.Context, batch: str, every: float = 1.0) -> None:
    api = service(ctx)
    batch = resolve_batch(api, batch)
    # The feed's head before the counts: nothing written after the counts were read can
    # be missed (client.batch_feed). None from a server without the feed: poll instead.
    feed = BatchFeed.at_head(api, batch, every=every)
    counts = api.get(f"/batches/{batch}")
    started = time.monotonic()
    console = Console(stderr=True)
    with Progress(_Line(console), console=console, transient=False) as progress:
        task = progress.add_task(
            "watch",
            total=sum(counts.values()),
            batch=batch,
            counts=counts,
            started=started,
            first_done=counts["succeeded"] + counts["failed"],
        )
        finished = all_ended(counts)  # ended before the watch began: nothing to wait for
        while not finished:
            if feed is not None:
                counts = feed.look(counts)
                # Its `batch.finished`, not counts moved by events (one may be counted twice).
                finished = feed.finished
            else:
                time.sleep(every)
                counts = api.get(f"/batches/{batch}")
                finished = all_ended(counts)
            progress.update(task, counts=counts, completed=counts["succeeded"] + counts["failed"])
    out.print(f"batch {short(batch)}: {counts_line(counts)} (watched {clock(time.monotonic() - started)})")
    ctx.exit(0 if counts["succeeded"] == sum(counts.values()) else 1)


def _waiting(detail: dict[str, Any]) -> str:
    position = detail.get("queue_position")
    place = f"; place in line {position:,} (1 = next)" if position is not None else ""
    return f"job {short(detail['job_id'])} is waiting ({detail['status']}): {detail.get('reason') or 'no reason given'}{place}"


class Narrator:
    """What `logs -f` says on stderr about a job that is not running: a line when it
    waits (its status, `reason` and `queue_position`), again when its status changes,
    or its reason or place does and `quiet` seconds have passed (the fair-share figures
    in a reason change at every look); `starting` and `running` once it gets there after
    a wait, and a running job's reason when it has one (a cancel on its way)."""

    def __init__(self, quiet: float = 30.0) -> None:
        self.quiet = quiet
        self.status: str | None = None
        self.said = ""
        self.when = 0.0

    def look(self, detail: dict[str, Any]) -> None:
        status, now = detail["status"], time.monotonic()
        line = ""
        if status in WAITING:
            line = _waiting(detail)
        elif status in ("STARTING", "RUNNING") and (detail.get("reason") or self.status not in (None, status)):
            reason = f": {detail['reason']}" if detail.get("reason") else ""  # `Cancel requested; waiting ...`
            line = f"job {short(detail['job_id'])} is {status.lower()}{reason}"
        changed = status != self.status
        if line and line != self.said and (changed or now - self.when >= self.quiet):
            click.echo(line, err=True)
            self.said, self.when = line, now
        self.status = status


@click.command(
    help="A job's output (stdout and stderr). JOB alone (a whole id), or BATCH JOB. "
    "-f follows it: says what it waits for while it waits, prints its output as it comes, and ends with its "
    "status (exit 1 if it FAILED, cancelled too)."
)
@click.argument("ids", nargs=-1, required=True, metavar="[BATCH] JOB", type=ID)
@click.option("-f", "--follow", is_flag=True, help="Follow it to its end.")
@click.option("--every", type=float, default=0.5, show_default=True, help="Seconds between looks when following.")
@click.pass_context
def logs(ctx: click.Context, ids: tuple[str, ...], follow: bool, every: float) -> None:
    api = service(ctx)
    path = job_path(api, ids)
    offset = 0
    narrator = Narrator()
    while True:
        detail = api.get(path)  # before the read: a job seen ended has written all
        data, size = api.log(detail["log_id"], offset=offset)
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            offset += len(data)
        if offset < size:
            continue
        if not follow:
            return
        if detail["status"] in ENDED:
            reason = f": {detail['reason']}" if detail.get("reason") else ""
            click.echo(f"job {short(detail['job_id'])} {detail['status']}{reason}", err=True)
            ctx.exit(1 if detail["status"] == "FAILED" else 0)
        narrator.look(detail)
        time.sleep(every)
