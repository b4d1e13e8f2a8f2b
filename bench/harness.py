"""What the benchmarks share: the database they measure (PostgreSQL, always), settings
for the process and the workers it starts, waiting for a `runworker` to be up,
percentiles, running a baseline interleaved with the measured run, and printing the
configuration and the figures the same way in every bench.

The benches import the application's modules at the top of `main()` (after
`setup_django()`), a few each: when modules move, those lines are all to update.
"""

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/batches_bench"


def use_postgresql() -> str:
    """DATABASE_URL if it names a PostgreSQL database; the bench database if unset.
    Anything else is refused: these figures are PostgreSQL's (the deployment's)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        print(f"DATABASE_URL is not set: measuring on {DEFAULT_DATABASE_URL}", flush=True)
        url = DEFAULT_DATABASE_URL
    elif not url.startswith(("postgres://", "postgresql://", "pgsql://")):
        raise SystemExit(f"the benches measure PostgreSQL; DATABASE_URL is {url.split(':', 1)[0]}: unset it or point it to PostgreSQL")
    os.environ["DATABASE_URL"] = url
    return url


def prepare_environment(**defaults: str) -> None:
    """Settings for this process and the servers and workers it starts: PostgreSQL, the
    deployment's settings (batchsite.settings: its throttles and database cache), a
    fresh data folder, then `defaults` (environment variables already set win)."""
    use_postgresql()
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ["DJANGO_SETTINGS_MODULE"] = "batchsite.settings"
    os.environ["BATCHES_DATA_DIR"] = tempfile.mkdtemp(prefix="batches-bench-")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def setup_django() -> None:
    import django

    django.setup()


def fresh_database() -> None:
    """The bench database migrated and emptied (every table truncated), with the
    deployment's cache table. The database is the benches' own: nothing else is kept."""
    from django.core.management import call_command

    _create_database_if_missing()
    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    call_command("createcachetable", verbosity=0)


def _create_database_if_missing() -> None:
    """A fresh machine has no bench database: it is created (from the server's
    `postgres` database) rather than failing on the first connection."""
    import psycopg
    from django.db import connection

    try:
        connection.ensure_connection()
        return
    except Exception as exc:  # noqa: BLE001 - the one missing-database error is told apart below
        if "does not exist" not in str(exc):
            raise
    params = connection.get_connection_params()
    name = connection.settings_dict["NAME"]
    admin = {key: value for key, value in params.items() if key in ("host", "port", "user", "password")}
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as server:
        server.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - the name is the bench's own setting
    print(f"created the bench database {name}", flush=True)


def vacuum_analyze(*tables: str) -> None:
    """VACUUM ANALYZE (the whole database, or `tables`): what autovacuum would have done
    by the time a deployment's filled tables are read."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE " + ", ".join(tables) if tables else "VACUUM ANALYZE")


def describe_database() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    db = connection.settings_dict
    return f"PostgreSQL {version} at {db['HOST'] or 'localhost'}:{db['PORT'] or 5432}, database {db['NAME']}"


def print_config(title: str, **items: object) -> None:
    """What is measured: the bench, the database, the machine, then `items` (isolation,
    slots, batch size, vacuumed or not...), one per line."""
    print(f"== {title}")
    print(f"   {'database':<14} {describe_database()}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"   {'machine':<14} {os.cpu_count()} cpu(s), affinity {len(os.sched_getaffinity(0))}, load {load}; shared: read medians and ratios"
    )
    for name, value in items.items():
        print(f"   {name.replace('_', ' '):<14} {value}")
    sys.stdout.flush()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 values is the largest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def interleave(rounds: int, baseline: Callable[[], float], measured: Callable[[], float], *, label: str = "") -> tuple[list, list]:
    """baseline, measured, baseline, measured ... `rounds` times each; each call returns
    its figure (or a list of figures, which are pooled). Prints each round."""
    base: list[float] = []
    ours: list[float] = []
    for number in range(1, rounds + 1):
        b = baseline()
        m = measured()
        base.extend(b if isinstance(b, list) else [b])
        ours.extend(m if isinstance(m, list) else [m])
        if label:
            print(f"   round {number}/{rounds} {label}: baseline {_short(b)}  measured {_short(m)}", flush=True)
    return base, ours


def _short(value: float | list[float]) -> str:
    if isinstance(value, list):
        return f"median {statistics.median(value):.4g} of {len(value)}" if value else "none"
    return f"{value:.4g}"


def compare(
    label: str,
    baseline: list[float],
    measured: list[float],
    *,
    unit: str = "ms",
    scale: float = 1000.0,
    p99: bool = False,
    baseline_label: str = "baseline",
    target: str = "",
) -> float:
    """One line: medians (and p99s) of both sides, and measured / baseline. Returns the
    ratio of the medians."""
    b, m = statistics.median(baseline) * scale, statistics.median(measured) * scale
    ratio = m / b if b else float("inf")
    line = f"   {label:<38} {baseline_label} p50 {b:9.2f} {unit}   measured p50 {m:9.2f} {unit}   ratio {ratio:6.2f}x"
    if p99:
        b99, m99 = percentile(baseline, 0.99) * scale, percentile(measured, 0.99) * scale
        line += f"   | p99 {b99:9.2f} vs {m99:9.2f} {unit} ratio {m99 / b99 if b99 else float('inf'):6.2f}x"
    line += f"   (n={len(baseline)}/{len(measured)})"
    if target:
        line += f"   {target}"
    print(line, flush=True)
    return ratio


def wait_for_worker(process: subprocess.Popen, *, timeout: float = 60) -> None:
    """Until the `runworker` process has registered as ACTIVE; exits if it dies first."""
    from jobs.models import Worker

    deadline = time.monotonic() + timeout
    while not Worker.objects.filter(state="ACTIVE", pid=process.pid).exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the worker did not start")
        time.sleep(0.1)


def start_service(
    env: dict[str, str], *, port: int, log_path: str, server_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, subprocess.Popen]:
    """gunicorn (the shipped config, its output into `log_path`, `env` with `server_env`)
    and a `runworker` (`env`); returns (server, worker) once the server answers
    /healthz on `port`."""
    log = open(log_path, "w")  # noqa: SIM115 (the server holds it while it runs)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "batchsite/gunicorn.conf.py", "batchsite.wsgi"],
        cwd=ROOT,
        env={**env, **(server_env or {})},
        stdout=log,
        stderr=log,
    )
    worker = subprocess.Popen([sys.executable, "manage.py", "runworker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310 (loopback)
            break
        except OSError:
            time.sleep(0.2)
    return server, worker


def worker_isolation(process: subprocess.Popen) -> dict:
    """The isolation parts the worker reported when it registered."""
    from jobs.models import Worker

    return Worker.objects.filter(pid=process.pid).order_by("-started_at").values_list("isolation", flat=True).first() or {}
