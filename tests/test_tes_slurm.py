"""GA4GH TES tasks on a real Slurm cluster, sealed (issue 23): the task's runner runs
on the node as the tenant's job account, each step in a sandbox of its own, and its
results come back through the submission's shared folder. Skips without a cluster,
root or bubblewrap; fails instead in CI (BATCHES_REQUIRE_SLURM, BATCHES_REQUIRE_ISOLATION)."""

import tempfile
from pathlib import Path

import pytest

from accounts.capabilities import allow_commands
from batches.models import Filesystem, Image
from jobs.models import Job
from tests.conftest import make_client
from tests.test_slurm import _PROBLEM
from tests.test_slurm_sealed import sealed, story  # noqa: F401 (a fixture)
from tests.worker_helpers import drive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytestmark.append(pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""))

TES = "/ga4gh/tes/v1"


def test_a_task_runs_on_slurm_sealed_with_inputs_volumes_and_outputs(sealed, alice):  # noqa: F811
    allow_commands(user=alice)
    Image.objects.create(pattern="alpine*", root="")
    base = Path(tempfile.mkdtemp(prefix="batches-tes-slurm-"))
    base.chmod(0o755)
    store = base / "store"
    store.mkdir()
    store.chmod(0o777)
    fs = Filesystem.objects.create(name="tes-slurm-store", path=str(store))
    fs.users.add(alice)
    client = make_client(alice)
    document = {
        "inputs": [{"path": "/data/in.txt", "content": "on the node\n"}],
        "outputs": [{"path": "/vol/out.txt", "url": f"file://{store}/out.txt"}],
        "volumes": ["/vol"],
        "executors": [
            {"image": "alpine", "command": ["sh", "-c", "cat /data/in.txt > /vol/out.txt; id -u >> /vol/out.txt"]},
            {"image": "alpine", "command": ["sh", "-c", "cat /vol/out.txt; exit 4"], "ignore_error": True},
            {"image": "alpine", "command": ["sh", "-c", "exit 5"]},
        ],
    }
    task_id = client.post(f"{TES}/tasks", document, format="json").json()["id"]
    job = Job.objects.get(batch_id=task_id)
    drive(sealed, lambda: Job.objects.get(pk=job.pk).status in ("SUCCEEDED", "FAILED"), timeout=90)
    task = client.get(f"{TES}/tasks/{task_id}?view=FULL").json()
    assert task["state"] == "EXECUTOR_ERROR", story(job)
    steps = task["logs"][0]["logs"]
    assert [s["exit_code"] for s in steps] == [0, 4, 5], story(job)
    first, uid = steps[1]["stdout"].splitlines()
    assert first == "on the node" and uid != "0"  # the tenant's account, never root
    assert task["logs"][0]["metadata"]["executor"] == "slurm"
    assert any("step 3 of 3 (sh) ended with exit code 5" in line for line in task["logs"][0]["system_logs"])
    assert not (store / "out.txt").exists()  # outputs go only after every step that counts succeeded

    document["executors"] = document["executors"][:1]
    task_id = client.post(f"{TES}/tasks", document, format="json").json()["id"]
    job = Job.objects.get(batch_id=task_id)
    drive(sealed, lambda: Job.objects.get(pk=job.pk).status in ("SUCCEEDED", "FAILED"), timeout=90)
    task = client.get(f"{TES}/tasks/{task_id}?view=FULL").json()
    assert task["state"] == "COMPLETE", story(job)
    assert (store / "out.txt").read_text().startswith("on the node\n")
