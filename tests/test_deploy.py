"""The deployment guide's production settings pass Django's own deployment checks."""

import secrets
import subprocess
import sys

from tests.worker_helpers import ROOT


def test_the_production_checklist_passes_check_deploy(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "batches.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://batches.example.org",
        "BATCHES_HTTPS": "1",
        "BATCHES_HSTS_INCLUDE_SUBDOMAINS": "1",
        "BATCHES_HSTS_PRELOAD": "1",
        "BATCHES_DATA_DIR": str(tmp_path),
        "LOG_FORMAT": "json",
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    # Without HTTPS the same check names what is missing (the guide explains each).
    del env["BATCHES_HTTPS"]
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )  # noqa: S603
    assert "SESSION_COOKIE_SECURE" in done.stdout + done.stderr
