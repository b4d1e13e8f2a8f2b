"""Benchmark: a mixed load on the shipped gunicorn set-up, over loopback, against a bare
view's load on the same server.

    .venv/bin/python bench/mixed_load.py [--clients 16] [--seconds 30] [--rounds 2] [--large-jobs 5000]
    .venv/bin/python bench/mixed_load.py --clients 32 --seconds 60 --large-jobs 100000   # the normal case

Starts gunicorn (batchsite/gunicorn.conf.py, `--web-workers` processes, the deployment's
settings: throttles in the database cache table, at a rate no client reaches here) and,
with a worker running jobs beside it (unsealed: BATCHES_ISOLATION=off), alternates
`--rounds` times: the baseline, `--clients` clients calling GET /healthz (a bare Django
view) for `--seconds`; then the measured run, `--clients` clients (each its own user
and token) for `--seconds`: submissions (one in twenty of `--large-jobs` jobs), status
reads, job pages, lists, cancels and deletes (tests/load.py). Prints requests, p50 and
p99 per route with their ratios to the bare view's, every 5xx, and checks that every
batch answered 201 (and not deleted) is in the database with all its jobs. On the bench
database (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench; emptied
first).
"""

import argparse
import http.client
import os
import socket
import threading
import time

import harness
from harness import ROOT


def bare_load(port: int, clients: int, seconds: float) -> list[float]:
    """`clients` threads calling GET /healthz for `seconds`: each call's time."""
    times: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.monotonic()
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            elapsed = time.monotonic() - started
            connection.close()
            with lock:
                times.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--large-jobs", type=int, default=5000, help="jobs of one submission in twenty (100,000: the normal case)")
    parser.add_argument("--web-workers", type=int, default=4)
    options = parser.parse_args()

    harness.prepare_environment(BATCHES_ISOLATION="off", BATCHES_REQUIRE_ISOLATION="0", BATCHES_THROTTLE_RATE="1000000/min")
    harness.setup_django()
    from django.conf import settings
    from django.contrib.auth.models import User

    from accounts.services import issue_token
    from batches.catalog import load_catalog_file, sync_catalog
    from batches.models import Batch, Filesystem, Tool
    from jobs.models import Job
    from tests.load import LoadResult, run_load

    harness.fresh_database()
    data = load_catalog_file(ROOT / "catalog" / "demo.yaml")
    for fs in data["filesystems"]:
        fs["path"] = os.environ["BATCHES_DATA_DIR"]
    sync_catalog(data=data)
    body = {
        "tool_id": str(Tool.objects.get(name="echo").pk),
        "hardware": {"cpu": 1, "memory": 64, "filesystem_list": [str(Filesystem.objects.get(name="scratch").pk)]},
        "jobs": [],
    }
    harness.vacuum_analyze()
    harness.print_config(
        "mixed_load: the API under a mixed load over loopback, against a bare view under the same clients",
        isolation="off (BATCHES_ISOLATION=off; the worker runs the submitted echo jobs unsealed)",
        slots=f"one runworker (the machine's cpus), {options.web_workers} gunicorn processes",
        batch_size=f"submissions of 1-100 jobs, one in twenty of {options.large_jobs:,}",
        clients=f"{options.clients}, {options.seconds:.0f} s per phase",
        rounds=f"{options.rounds}, interleaved (GET /healthz load, mixed load, ...)",
        throttle=f"{settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]}, user rate {settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['user']}",
        vacuumed="VACUUM ANALYZE on the emptied database; none during the load",
    )
    tokens = [issue_token(user=User.objects.get_or_create(username=f"load{i}")[0])[1] for i in range(options.clients)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_WORKERS": str(options.web_workers)}
    print(f"   gunicorn's log: {os.environ['BATCHES_DATA_DIR']}/gunicorn.log", flush=True)
    server, worker = harness.start_service(
        env, port=port, log_path=os.path.join(os.environ["BATCHES_DATA_DIR"], "gunicorn.log"), server_env={"LOG_LEVEL": "WARNING"}
    )
    try:
        result = LoadResult()

        def measured() -> list[float]:
            each = run_load(port=port, tokens=tokens, body=body, seconds=options.seconds, large_jobs=options.large_jobs)
            for route in each.codes:
                result.codes[route].extend(each.codes[route])
                result.seconds[route].extend(each.seconds[route])
            result.created.update(each.created)
            result.deleted.update(each.deleted)
            result.errors.extend(each.errors)
            return [value for values in each.seconds.values() for value in values]

        bare, _ = harness.interleave(options.rounds, lambda: bare_load(port, options.clients, options.seconds), measured, label="(s)")
    finally:
        server.terminate()
        worker.terminate()
        server.wait()
        worker.wait()
    print(f"results (baseline = GET /healthz under the same {options.clients} clients, {len(bare)} calls; p50 and p99 per route):")
    for route in sorted(result.codes):
        codes = result.codes[route]
        summary = ", ".join(f"{code}: {codes.count(code)}" for code in sorted(set(codes)))
        harness.compare(f"{route} ({len(codes)})", bare, result.seconds[route], p99=True, baseline_label="healthz", target=summary)
    print(f"   5xx: {sum(result.server_errors().values())}; client-side errors: {len(result.errors)}")
    kept = {batch_id: n for batch_id, n in result.created.items() if batch_id not in result.deleted}
    missing = [
        batch_id
        for batch_id, n in kept.items()
        if not Batch.objects.filter(pk=batch_id, deleted_at__isnull=True, n_jobs=n).exists()
        or Job.objects.filter(batch_id=batch_id).count() != n
    ]
    print(f"   batches created (201): {len(result.created)}, kept: {len(kept)}, incomplete or missing: {len(missing)}")


if __name__ == "__main__":
    main()
