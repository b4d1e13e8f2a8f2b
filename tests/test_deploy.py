"""The deployment guide's production settings pass Django's own deployment checks, and
it starts every process the service needs."""

import re
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


def test_a_setting_file_that_cannot_be_read_is_named_in_one_line(tmp_path):
    """docs/deploy.md sets BATCHES_METRICS_TOKEN_FILE; before the file existed every
    manage.py command died in a 33-line traceback that did not name the variable."""
    env = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "t", "BATCHES_METRICS_TOKEN_FILE": str(tmp_path / "metrics_token")}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"configuration error: BATCHES_METRICS_TOKEN_FILE names '{tmp_path / 'metrics_token'}', which cannot be read: No such file or directory"
    ]


def test_the_guide_has_a_unit_for_each_process_that_runs_always():
    """A deployment that followed the guide without a unit for `deliver_webhooks` sent
    no webhook at all: each long-running command has a systemd unit that restarts it."""
    guide = (ROOT / "docs" / "deploy.md").read_text()
    units = [block for block in re.findall(r"```ini\n(.*?)```", guide, flags=re.DOTALL) if "Restart=on-failure" in block]
    for command in ("gunicorn", "manage.py runworker", "manage.py deliver_webhooks"):
        assert any(re.search(rf"^ExecStart=.*{re.escape(command)}", unit, flags=re.MULTILINE) for unit in units), command
