"""The README's two commands' helpers: `make run` refuses a taken port, and reuses its
demo token instead of piling one up per run."""

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
