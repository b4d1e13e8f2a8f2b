"""Benchmark: a mixed load on the shipped gunicorn set-up, over loopback.

    DATABASE_URL=postgres://.../disposable .venv/bin/python bench/mixed_load.py [--clients 32] [--seconds 60]

Starts gunicorn (batchsite/gunicorn.conf.py, WEB_WORKERS processes) and, with a worker
running jobs beside it, drives `--clients` clients (each its own user and token) for
`--seconds`: submissions (one in twenty of 20,000 jobs), status reads, job pages, lists,
cancels and deletes (tests/load.py). Prints requests, p50 and p99 per route, every 5xx,
and checks that every batch answered 201 (and not deleted) is in the database with all
its jobs. The database must be disposable (a fresh SQLite one in a temporary folder
without DATABASE_URL).
"""

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

import harness
from harness import ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--web-workers", type=int, default=4)
    options = parser.parse_args()

    harness.prepare_environment(BATCHES_ISOLATION="off", BATCHES_THROTTLE_RATE="1000000/min")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from accounts.services import issue_token
    from batches.catalog import load_catalog_file, sync_catalog
    from batches.models import Batch, Filesystem, Tool
    from jobs.models import Job
    from tests.load import run_load

    call_command("migrate", verbosity=0)
    call_command("createcachetable")
    data = load_catalog_file(ROOT / "catalog" / "demo.yaml")
    for fs in data["filesystems"]:
        fs["path"] = os.environ["BATCHES_DATA_DIR"]
    sync_catalog(data=data)
    body = {
        "tool_id": str(Tool.objects.get(name="echo").pk),
        "hardware": {"cpu": 1, "memory": 64, "filesystem_list": [str(Filesystem.objects.get(name="scratch").pk)]},
        "jobs": [],
    }
    tokens = [issue_token(user=User.objects.get_or_create(username=f"load{i}")[0])[1] for i in range(options.clients)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_WORKERS": str(options.web_workers)}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "batchsite/gunicorn.conf.py", "batchsite.wsgi"],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
    )
    worker = subprocess.Popen([sys.executable, "manage.py", "runworker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310 (loopback)
                break
            except OSError:
                time.sleep(0.2)
        result = run_load(port=port, tokens=tokens, body=body, seconds=options.seconds)
    finally:
        server.terminate()
        worker.terminate()
        server.wait()
        worker.wait()
    print(f"{options.clients} clients, {options.seconds:.0f} s, {options.web_workers} gunicorn processes, {django.db.connection.vendor}")
    for route in sorted(result.codes):
        codes = result.codes[route]
        summary = ", ".join(f"{code}: {codes.count(code)}" for code in sorted(set(codes)))
        print(
            f"{route:32} {len(codes):6} requests  p50 {result.percentile(route, 0.5) * 1000:7.1f} ms"
            f"  p99 {result.percentile(route, 0.99) * 1000:8.1f} ms  ({summary})"
        )
    print(f"5xx: {sum(result.server_errors().values())}; client-side errors: {len(result.errors)}")
    kept = {batch_id: n for batch_id, n in result.created.items() if batch_id not in result.deleted}
    missing = [
        batch_id
        for batch_id, n in kept.items()
        if not Batch.objects.filter(pk=batch_id, deleted_at__isnull=True, n_jobs=n).exists()
        or Job.objects.filter(batch_id=batch_id).count() != n
    ]
    print(f"batches created (201): {len(result.created)}, kept: {len(kept)}, incomplete or missing: {len(missing)}")


if __name__ == "__main__":
    main()
