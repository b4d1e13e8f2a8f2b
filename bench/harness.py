"""What the benchmarks share: settings for the process and the workers it starts, and
waiting for a `runworker` to be up."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prepare_environment(**defaults: str) -> None:
    """Settings for this process and the servers and workers it starts: a fresh data
    folder, then `defaults` (environment variables already set win)."""
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")
    os.environ["BATCHES_DATA_DIR"] = tempfile.mkdtemp(prefix="batches-bench-")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    sys.path.insert(0, str(ROOT))


def wait_for_worker(process: subprocess.Popen, *, timeout: float = 60) -> None:
    """Until the `runworker` process has registered as ACTIVE; exits if it dies first."""
    from jobs.models import Worker

    deadline = time.monotonic() + timeout
    while not Worker.objects.filter(state="ACTIVE", pid=process.pid).exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the worker did not start")
        time.sleep(0.1)
