"""What a hostile tenant tried on the TES routes (issue 23, a security review of this
session), each now refused: alice, allowed to run commands, against bob's files and the
host, in a deployment where every tenant's runner is the one shared job account (so
only the service's checks keep them apart outside the sandbox). Each test failed on the
code before its fix (the finding's note says what happened). Sealed real runs: skip
without root and bubblewrap unless BATCHES_REQUIRE_ISOLATION=1 (CI)."""

import base64
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from batches.models import Filesystem
from jobs.models import Job
from tests.test_tes_run import TES, loop, run, store, tes  # noqa: F401 (fixtures)
from tests.worker_helpers import drive

pytestmark = pytest.mark.django_db


def _job_account() -> pwd.struct_passwd:
    return pwd.getpwnam(settings.BATCHES_JOB_USER or "batches-job")


def _bobs(path: Path) -> None:
    """Owned by the shared job account (what bob's own jobs wrote), private."""
    account = _job_account()
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o700 if path.is_dir() else 0o600)


@pytest.fixture
def bobfs(bob):
    base = Path(tempfile.mkdtemp(prefix="batches-bob-"))
    base.chmod(0o755)
    data = base / "bobdata"
    data.mkdir()
    (data / "secret.txt").write_text("BOB SECRET\n")
    (data / "results.txt").write_text("bob's real results\n")
    for path in (data / "secret.txt", data / "results.txt", data):
        _bobs(path)
    Filesystem.objects.create(name="bob-store", path=str(data)).users.add(bob)
    return data


@pytest.fixture
def sibling(store, bob):  # noqa: F811 (the fixtures imported above)
    """bob's filesystem beside alice's (/srv/fs/alice, /srv/fs/bob)."""
    data = store.parent / "bobdata"
    data.mkdir()
    (data / "results.txt").write_text("bob's real results\n")
    for path in (data / "results.txt", data):
        _bobs(path)
    Filesystem.objects.create(name="bob-sibling", path=str(data)).users.add(bob)
    return data


def _stdout(task: dict) -> str:
    logs = task["logs"][0]["logs"] if task["logs"] else []
    return "".join(step.get("stdout", "") for step in logs)


def test_a_steps_environment_never_reaches_bubblewrap(tes, loop, bobfs, tmp_path):  # noqa: F811 (the fixtures imported above)
    """LD_PRELOAD in a step's env ran a library the step wrote inside bubblewrap itself,
    before any namespace: as the job account, outside the sandbox, it read bob's secret
    and wrote into his folder. The env now goes in with --setenv."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the library a hostile tenant would bring")
    source = tmp_path / "pre.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n__attribute__((constructor)) static void pwn(void) {\n"
        '  const char *m = getenv("PWN_MARK"); if (!m) return; char cmd[4096];\n'
        '  snprintf(cmd, sizeof cmd, "cat %s/secret.txt > %s/pwned.txt 2>&1", m, m); system(cmd); }\n'
    )
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "pre.so"), str(source)], check=True)  # noqa: S603, S607
    library = base64.b64encode((tmp_path / "pre.so").read_bytes()).decode()
    run(
        tes,
        loop,
        {
            "inputs": [{"path": "/data/so.b64", "content": library}],
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "base64 -d /data/so.b64 > /data/x.so"]},
                {"image": "alpine", "command": ["true"], "env": {"LD_PRELOAD": "m/0/x.so", "PWN_MARK": str(bobfs)}},
            ],
        },
    )
    assert not (bobfs / "pwned.txt").exists()


@pytest.mark.parametrize("last", ["..", "%2e%2e", "."])
def test_an_output_url_ending_in_dots_is_refused(tes, store, sibling, last):  # noqa: F811 (the fixtures imported above)
    """`file://<alice's fs>/..` delivered a DIRECTORY output into the folder holding
    every tenant's filesystem: bob's results.txt was overwritten, the task COMPLETE."""
    response = tes.post(
        f"{TES}/tasks",
        {
            "outputs": [{"url": f"file://{store}/{last}", "path": "/out", "type": "DIRECTORY"}],
            "executors": [{"image": "alpine", "command": ["true"]}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "outputs[0].url"


def test_a_wildcard_in_path_prefix_is_refused(tes, store):  # noqa: F811 (the fixtures imported above)
    """`path_prefix: /out/*/*/*` climbed one `..` per star out of the destination
    (into bob's filesystem); `path_prefix: /` broke the worker's plan (six internal
    errors). A prefix is a plain directory that holds every match."""
    for prefix in ("/out/*/*/*", "/", "/elsewhere", "/out/a"):
        response = tes.post(
            f"{TES}/tasks",
            {
                "outputs": [{"url": f"file://{store}/sub", "path": "/out/*/x/*", "path_prefix": prefix}],
                "executors": [{"image": "alpine", "command": ["true"]}],
            },
            format="json",
        )
        assert response.status_code == 400, prefix
        assert "path_prefix" in response.json()["errors"][0]["field"] or "path" in response.json()["errors"][0]["field"]


def test_links_already_in_the_callers_filesystem_are_not_followed(tes, loop, store, bobfs):  # noqa: F811 (the fixtures imported above)
    """A link alice made earlier in her own filesystem took a delivered output into
    bob's file, and a directory swapped for a link after creation read bob's secret in."""
    (store / "out.txt").symlink_to(bobfs / "results.txt")
    (store / "outdir").symlink_to(bobfs)
    task = run(
        tes,
        loop,
        {
            "outputs": [{"url": f"file://{store}/out.txt", "path": "/o/a"}],
            "executors": [{"image": "alpine", "command": ["sh", "-c", "echo via-link > /o/a"]}],
        },
    )
    assert task["state"] == "SYSTEM_ERROR"
    task = run(
        tes,
        loop,
        {
            "outputs": [{"url": f"file://{store}/outdir/planted.txt", "path": "/o/b"}],
            "executors": [{"image": "alpine", "command": ["sh", "-c", "echo planted > /o/b"]}],
        },
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert (bobfs / "results.txt").read_text() == "bob's real results\n"
    assert sorted(os.listdir(bobfs)) == ["results.txt", "secret.txt"]

    folder = store / "in"
    folder.mkdir()
    (folder / "secret.txt").write_text("alice's own\n")
    (folder / "secret.txt").chmod(0o644)
    folder.chmod(0o755)
    task_id = tes.post(
        f"{TES}/tasks",
        {
            "inputs": [{"url": f"file://{folder}/secret.txt", "path": "/in/f"}],
            "executors": [{"image": "alpine", "command": ["cat", "/in/f"]}],
        },
        format="json",
    ).json()["id"]
    os.rename(folder, store / "in.old")
    folder.symlink_to(bobfs)
    drive(loop, lambda: Job.objects.get(batch_id=task_id).status in ("SUCCEEDED", "FAILED"), timeout=60)
    task = tes.get(f"{TES}/tasks/{task_id}?view=FULL").json()
    assert task["state"] == "SYSTEM_ERROR" and "BOB SECRET" not in _stdout(task)


def test_a_fifo_never_holds_the_runner(tes, loop):  # noqa: F811 (the fixtures imported above)
    """A step's FIFO as the next step's stdin blocked the runner in open() until the
    task's timeout (an hour by default), holding its slot."""
    task = run(
        tes,
        loop,
        {"executors": [{"image": "alpine", "command": ["mkfifo", "/data/p"]}, {"image": "alpine", "command": ["cat"], "stdin": "/data/p"}]},
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert any("not a regular file" in line for line in task["logs"][0]["system_logs"]), task["logs"][0]["system_logs"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"env": {"A=B": "x"}}, "executors[0].env"),
        ({"env": {"": "x"}}, "executors[0].env"),
        ({"env": {"X": "a\u0000b"}}, "executors[0].env"),
    ],
)
def test_environment_names_and_values_are_checked_at_creation(tes, change, field):  # noqa: F811 (the fixtures imported above)
    """`A=B`, an empty name and a NUL were accepted and crashed the runner (no logs,
    shown as EXECUTOR_ERROR)."""
    response = tes.post(f"{TES}/tasks", {"executors": [{"image": "alpine", "command": ["env"], **change}]}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == field


def test_a_nul_in_a_file_url_is_a_400_and_inputs_are_listed_once(tes, store):  # noqa: F811 (the fixtures imported above)
    """`file://<fs>/%00/../x` was a 500 (realpath's ValueError); the same input path
    listed 200 times put 200 copies on the worker's disk."""
    response = tes.post(
        f"{TES}/tasks",
        {"inputs": [{"url": f"file://{store}/%00/../x", "path": "/in/f"}], "executors": [{"image": "alpine", "command": ["true"]}]},
        format="json",
    )
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "inputs[0].url"
    response = tes.post(
        f"{TES}/tasks",
        {"inputs": [{"url": "file:etc/passwd", "path": "/in/f"}], "executors": [{"image": "alpine", "command": ["true"]}]},
        format="json",
    )
    assert response.status_code == 400 and "absolute path" in response.json()["errors"][0]["message"]
    twice = [{"path": "/in/f", "content": "x"}, {"path": "/in/f", "content": "y"}]
    response = tes.post(f"{TES}/tasks", {"inputs": twice, "executors": [{"image": "alpine", "command": ["true"]}]}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "inputs[1].path"


def test_a_step_cannot_fill_the_workers_disk(tes, loop):  # noqa: F811 (the fixtures imported above)
    """The task's directories were on the worker's disk (a step's `df` showed the host's
    252G): 200 copies of an 8 MB input put 1.6 GB there, and a step could write without
    bound. They are now a tmpfs of the attempt's memory, whose pages count against its
    memory limit: a step writing past it is stopped there (out of memory, as a sealed
    job filling its working directory is), and the disk is untouched."""
    task = run(
        tes,
        loop,
        {
            "resources": {"ram_gb": 0.125},
            "volumes": ["/vol"],
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "df -k /vol | tail -1"]},
                {"image": "alpine", "command": ["sh", "-c", "head -c 300000000 /dev/zero > /vol/big; echo rc=$?"]},
            ],
        },
    )
    first = task["logs"][0]["logs"][0]["stdout"]
    assert first.startswith("batches-task"), first
    assert int(first.split()[1]) <= 128 * 1024, first
    assert task["state"] == "SYSTEM_ERROR", task["logs"][0]["system_logs"]
    assert any("out_of_memory" in line for line in task["logs"][0]["system_logs"]), task["logs"][0]["system_logs"]
