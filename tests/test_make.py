"""The README's two commands' helpers: `make run` refuses a taken port, and reuses its
demo token instead of piling one up per run."""

import fcntl
import socket
import subprocess
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import ApiToken
from tests.worker_helpers import ROOT

pytestmark = pytest.mark.django_db


def test_make_run_refuses_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(["make", "-s", "port-free", f"PORT={port}"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is taken" in result.stderr
    free = subprocess.run(["make", "-s", "port-free", f"PORT={port}"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert free.returncode == 0, free.stderr


def test_the_demo_token_is_reused_while_valid(catalog, tmp_path):
    path = tmp_path / "demo_token"
    outputs = []
    for _ in range(3):
        out = StringIO()
        call_command("demo_setup", "--token-file", str(path), stdout=out)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert ApiToken.objects.filter(user__username="demo").count() == 1
    assert path.stat().st_mode & 0o777 == 0o600
    ApiToken.objects.update(revoked_at=timezone.now())
    out = StringIO()
    call_command("demo_setup", "--token-file", str(path), stdout=out)
    assert out.getvalue() != outputs[0], "a revoked token is replaced"


def test_a_second_make_run_in_the_same_folder_is_refused(tmp_path):
    """Two `make run`s in one clone ran two servers and two workers on one SQLite
    database, each offering every cpu. The running one holds data/run.lock (taken here
    as it holds it, with flock) and the second stops before touching the database."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "env").write_text("BATCHES_URL=http://127.0.0.1:8123\nBATCHES_TOKEN=x\n")
    with open(data / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = subprocess.run(["make", "-s", "not-running", f"DATA={data}"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "make run is already running in this folder (http://127.0.0.1:8123)" in refused.stderr
    free = subprocess.run(["make", "-s", "not-running", f"DATA={data}"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert free.returncode == 0, free.stderr


def test_demo_setup_writes_the_clients_settings_with_its_port(catalog, tmp_path):
    """The README's blocks read data/env (`set -a; . data/env; set +a`), so they work
    on whatever port make run serves."""
    path = tmp_path / "env"
    out = StringIO()
    call_command("demo_setup", "--url", "http://127.0.0.1:8123/", "--token-file", str(tmp_path / "t"), "--env-file", str(path), stdout=out)
    token = (tmp_path / "t").read_text().strip()
    assert path.read_text() == f"BATCHES_URL=http://127.0.0.1:8123\nBATCHES_TOKEN={token}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert f"set -a; . {path}; set +a" in out.getvalue()
