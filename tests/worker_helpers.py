"""Helpers for the executor and worker tests: batches of real jobs, an in-process worker
loop driven step by step, and `manage.py runworker` subprocesses that share the test
database."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from batches.models import Batch, Tool
from jobs.executors.isolation import Isolation
from jobs.executors.local import LocalExecutor
from jobs.models import Job
from jobs.submission import submit_batch
from jobs.worker import WorkerConfig, WorkerLoop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def script_tool(name: str = "script", *, timeout_seconds: int | None = None) -> Tool:
    """A tool that runs a /bin/sh script given as its argument (the tool's own program
    is sh; the executor never uses a shell)."""
    tool, _ = Tool.objects.update_or_create(
        name=name,
        defaults={
            "command": ["/bin/sh", "-c", "{script}", "script"],
            "parameters": {"script": {"type": "string", "required": True}},
            "timeout_seconds": timeout_seconds,
        },
    )
    return tool


def python_tool(name: str, code: str, parameters: dict[str, Any] | None = None, extra: list[str] | None = None) -> Tool:
    tool, _ = Tool.objects.update_or_create(
        name=name,
        defaults={"command": [PYTHON, "-c", code, *(extra or [])], "parameters": parameters or {}},
    )
    return tool


def make_batch(user: Any, tool: Tool, catalog: dict[str, Any], jobs: list[dict[str, Any]], **options: Any) -> Batch:
    """Submit a batch through the service, with the catalog's scratch filesystem."""
    return submit_batch(
        user=user,
        tool_id=tool.pk,
        cpu=options.pop("cpu", 1),
        memory=options.pop("memory", 256),
        filesystem_ids=[catalog["filesystems"]["scratch"].pk],
        jobs=jobs,
        **options,
    )


def in_process_loop(
    *,
    cpus: int = 2,
    memory_mib: int = 4096,
    grace: float = 0.5,
    poll: float = 0.05,
    lease: float = 30.0,
    isolation: Isolation | None = None,
) -> WorkerLoop:
    """A worker loop in this process. Its jobs run unsealed unless `isolation` is given
    (tests/test_isolation.py seals them; the others look at the executor's own work)."""
    executor = LocalExecutor(
        cpus=cpus,
        memory_mib=memory_mib,
        grace_seconds=grace,
        isolation=isolation or Isolation.none("tests without isolation"),
    )
    loop = WorkerLoop(executor=executor, config=WorkerConfig(lease_seconds=lease, poll_seconds=poll, fencing=False))
    loop.start()
    return loop


def drive(loop: WorkerLoop, until: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Step the loop until `until()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            states = list(Job.objects.values_list("status", "reason"))
            raise AssertionError(f"condition not reached in {timeout} s; jobs: {states}")
        loop.step()


def statuses(batch: Batch) -> list[str]:
    return list(Job.objects.filter(batch=batch).order_by("index").values_list("status", flat=True))


def all_finished(batch: Batch) -> Callable[[], bool]:
    return lambda: not Job.objects.filter(batch=batch).exclude(status__in=["SUCCEEDED", "FAILED"]).exists()


def wait_for(condition: Callable[[], bool], *, timeout: float = 20.0, interval: float = 0.05, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not reached in {timeout} s")
        time.sleep(interval)


def database_url() -> str:
    """The test database as a DATABASE_URL, for subprocesses."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BATCHES_")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchsite.settings",
            "SECRET_KEY": "tests-only",
            "DATABASE_URL": database_url(),
            "BATCHES_LOG_DIR": str(settings.BATCHES_LOG_DIR),
            "BATCHES_WORK_DIR": str(settings.BATCHES_WORK_DIR),
            "BATCHES_WORKER_LEASE_SECONDS": "2",
            "BATCHES_WORKER_POLL_MS": "100",
            "BATCHES_KILL_GRACE_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            # These tests look at the executor's own work (pids, files in tmp_path);
            # tests/test_isolation.py runs workers sealed.
            "BATCHES_ISOLATION": "off",
        }
    )
    env.update(extra)
    return env


def start_worker(*args: str, stderr: Any = None, **env: str) -> subprocess.Popen:
    """`manage.py runworker` on the test database, in its own process group."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", *args],
        cwd=ROOT,
        env=worker_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        start_new_session=True,
    )


def stop_worker_process(process: subprocess.Popen, *, timeout: float = 15.0) -> str:
    """SIGTERM the worker, wait, and return its stderr."""
    if process.poll() is None:
        process.terminate()
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return (err or b"").decode(errors="replace")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def held_jobs_script(marks: Path, release: Path) -> str:
    """A job that writes its attempt number to `marks/<job id>`, then waits until
    `release` exists and prints "finished": it shows whether an attempt ran twice."""
    return f'echo "$BATCH_ATTEMPT" >> {marks}/$BATCH_JOB_ID; while [ ! -e {release} ]; do sleep 0.05; done; echo finished'


def hand_over(
    batch: Any, *, env: dict[str, str], first: subprocess.Popen, marks: Path, release: Path, count: int, timeout: float = 60
) -> None:
    """The second half of an adoption test: a new worker of the same executor adopts the
    `count` live attempts that `first` (stopped or dead) left, the jobs are released and
    end, and each ran exactly once with one SUCCEEDED event. Stops both workers."""
    from jobs.models import Attempt, JobEvent

    second = None
    try:
        second = start_worker(**env)
        wait_for(lambda: Attempt.objects.filter(job__batch=batch, worker__pid=second.pid).count() == count, timeout=30)
        release.write_text("")
        wait_for(all_finished(batch), timeout=timeout)
    finally:
        release.write_text("")
        stop_worker_process(first)
        if second is not None:
            stop_worker_process(second)
    assert statuses(batch) == ["SUCCEEDED"] * count
    assert all(path.read_text() == "1\n" for path in marks.iterdir()), "an attempt ran twice"
    for job in Job.objects.filter(batch=batch):
        assert job.attempts == 1
        assert JobEvent.objects.filter(job=job, to_status="SUCCEEDED").count() == 1
        assert b"finished" in (settings.BATCHES_LOG_DIR / f"{job.log_id}.log").read_bytes()


def race_with_open_transaction(hold: Callable[[], None], then: Callable[[], None]) -> list[BaseException]:
    """Run `hold` in a transaction of its own connection and keep that transaction open
    (its row locks held, its writes uncommitted) while `then` starts on another
    connection; commit half a second later and wait for both. Returns what either
    raised. PostgreSQL only: SQLite has one writer."""
    import threading

    from django.db import transaction

    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                hold()
                held.set()
                release.wait(10)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            held.set()
            connection.close()

    def second() -> None:
        try:
            then()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert held.wait(10)
    threads[1].start()
    time.sleep(0.5)  # `then` is now waiting on `hold`'s locks, or has run past them
    release.set()
    for thread in threads:
        thread.join(10)
    return errors
