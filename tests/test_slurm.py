"""The slurm executor against a real Slurm cluster (`scripts/slurm-cluster start`): real
sbatch, squeue and scancel, real slurmctld and slurmd, jobs running on the node.

Where no cluster answers `sinfo`, these tests skip and say why; CI sets
BATCHES_REQUIRE_SLURM=1, and there a missing cluster fails them. The tests of a
controller outage stop and start slurmctld, which needs root and a cluster started by
the project's script."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from batches.models import Batch
from jobs.claiming import claim_jobs
from jobs.executors.base import LiveAttempt, Outcome
from jobs.executors.slurm import SlurmExecutor
from jobs.executors.slurm_commands import SlurmCommands, SlurmUnavailable
from jobs.models import Attempt, Job
from jobs.removal import delete_batches
from jobs.services import cancel_batch, retry_failed_jobs
from jobs.worker import WorkerConfig, WorkerLoop
from tests.worker_helpers import (
    ROOT,
    all_finished,
    drive,
    hand_over,
    held_jobs_script,
    make_batch,
    script_tool,
    start_worker,
    statuses,
    stop_worker_process,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "slurm-cluster"


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "the Slurm client commands are not installed (apt-get install slurm-wlm munge; scripts/slurm-cluster start)"
    try:
        SlurmCommands(timeout=5).ping()
    except SlurmUnavailable as exc:
        return f"no Slurm cluster answers sinfo ({exc}); start one with scripts/slurm-cluster start"
    return None


_PROBLEM = _cluster_problem()
if _PROBLEM and os.environ.get("BATCHES_REQUIRE_SLURM") == "1":
    pytest.fail(f"BATCHES_REQUIRE_SLURM is set: {_PROBLEM}", pytrace=False)
pytestmark.append(pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""))


def _our_cluster() -> bool:
    conf = Path("/etc/slurm/slurm.conf")
    return os.geteuid() == 0 and conf.exists() and "Written by scripts/slurm-cluster" in conf.read_text()


@pytest.fixture
def slurm(settings, tmp_path):
    """Settings for the slurm executor; afterwards, whatever the test left in Slurm's
    queue (its jobs outlive the worker, by design) is cancelled. These tests look at the
    executor's own work (files in tmp_path, the worker's environment): isolation is off
    (tests/test_slurm_sealed.py runs tasks sealed)."""
    settings.BATCHES_ISOLATION = "off"
    settings.BATCHES_SLURM_DIR = tmp_path / "slurm"
    settings.BATCHES_SLURM_POLL_MS = 200
    settings.BATCHES_SLURM_COMMAND_TIMEOUT = 3
    SlurmExecutor._ready = (float("-inf"), None)
    yield settings
    if (tmp_path / "slurm").exists():
        for folder in (tmp_path / "slurm").iterdir():
            if folder.is_dir():
                subprocess.run(["scancel", f"--name=batches-{folder.name}"], capture_output=True, check=False)  # noqa: S603, S607


def slurm_loop(**options) -> WorkerLoop:
    loop = WorkerLoop(executor=SlurmExecutor(**options), config=WorkerConfig(lease_seconds=30, poll_seconds=0.1, fencing=False))
    loop.start()
    return loop


def in_squeue(external_ids: list[str]) -> set[str]:
    """Which of `external_ids` squeue lists as pending or running."""
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T"], capture_output=True, text=True, check=True).stdout  # noqa: S607
    live = {line.split("|")[0] for line in out.split() if line.split("|")[1] in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}}
    return live & set(external_ids)


def log_of(job: Job) -> str:
    path = settings.BATCHES_LOG_DIR / f"{job.log_id}.log"
    return path.read_text() if path.exists() else ""


def external_ids(batch) -> list[str]:
    return list(Attempt.objects.filter(job__batch=batch).exclude(external_id="").values_list("external_id", flat=True))


def test_a_200_job_batch_runs_to_succeeded_with_readable_logs(alice, alice_client, catalog, slurm):
    # Room for the whole batch in Slurm's hands: what the worker hands over at once goes
    # as one array (tests/test_slurm_fairshare.py tests the default, smaller bound).
    slurm.BATCHES_SLURM_MAX_SUBMITTED = 1000
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": f"echo hello {i} from $SLURM_JOB_ID"}} for i in range(200)])
    loop = slurm_loop()
    try:
        drive(loop, all_finished(batch), timeout=240)
    finally:
        loop.stop()
    assert statuses(batch) == ["SUCCEEDED"] * 200
    # Many jobs go in one sbatch --array, not one sbatch per job.
    arrays = {external_id.split("_")[0] for external_id in external_ids(batch)}
    assert len(arrays) <= 200 // 100 + 2
    for job in Job.objects.filter(batch=batch).order_by("index")[:20]:
        attempt = job.attempt_records.get()
        assert attempt.external_id.count("_") == 1 and attempt.node
        response = alice_client.get(f"/logs/{job.log_id}")
        expected = f"hello {job.index} from ".encode()
        assert response.status_code == 200 and response.content.startswith(expected)
        assert int(response["X-Log-Size"]) == len(response.content)
        assert alice_client.get(f"/logs/{job.log_id}?offset=6").content == response.content[6:]
        assert job.exit_code == 0 and job.reason == ""


def test_an_exit_code_a_timeout_and_hardware_reach_slurm(alice, catalog, slurm):
    failing = make_batch(alice, script_tool(), catalog, [{"args": {"script": "echo bad; exit 3"}}])
    slow = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 60"}}], timeout_seconds=2)
    sized = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 0.5"}}], cpu=2, memory=300)
    # Nothing of the worker's environment reaches a job, not even through its parent
    # (the job script, which runs as the same user).
    nosy = make_batch(alice, script_tool(), catalog, [{"args": {"script": "env; tr '\\0' '\\n' < /proc/$PPID/environ"}}])
    loop = slurm_loop()
    try:
        drive(loop, lambda: all(all_finished(b)() for b in (failing, slow, sized)), timeout=90)
    finally:
        loop.stop()
    job = Job.objects.get(batch=failing)
    assert (job.status, job.exit_code, job.reason) == ("FAILED", 3, "exit code 3 (Slurm: FAILED)")
    assert "bad" in log_of(job)
    job = Job.objects.get(batch=slow)
    assert job.status == "FAILED" and job.reason.startswith("timed out after 2 s")
    assert job.stop_time is not None and (job.stop_time - job.start_time).total_seconds() < 30
    job = Job.objects.get(batch=nosy)
    assert job.status == "SUCCEEDED" and f"BATCH_JOB_ID={job.pk}" in log_of(job)
    assert "SECRET_KEY" not in log_of(job) and "DATABASE_URL" not in log_of(job) and "SLURM_ARRAY_TASK_ID" in log_of(job)
    assert os.environ.get("SECRET_KEY"), "the test needs a secret in the worker's environment"
    job = Job.objects.get(batch=sized)
    assert job.status == "SUCCEEDED"
    array_id = job.attempt_records.get().external_id
    shown = subprocess.run(["scontrol", "show", "job", array_id], capture_output=True, text=True).stdout  # noqa: S607
    if shown:  # still known to the controller (MinJobAge)
        assert "NumCPUs=2" in shown and "mem=300M" in shown and "Requeue=0" in shown
        assert "TimeLimit=01:01:00" in shown  # the default hour, and a minute's backstop


def test_pending_jobs_are_runnable_with_slurms_reason_and_cancel_stops_queued_and_running(alice, catalog, slurm):
    # Each job takes the node's every cpu: one runs, the others wait for Resources.
    cpus = SlurmExecutor().capacity().cpus
    slurm.BATCHES_MAX_CPU = cpus  # what the API accepts: the cluster's largest node
    slurm.BATCHES_SLURM_MAX_SUBMITTED = 3 * cpus  # all three in Slurm's queue (the default is twice the cluster)
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 120"}} for _ in range(3)], cpu=cpus, memory=200)
    loop = slurm_loop()
    try:
        waiting = Job.objects.filter(batch=batch, status="RUNNABLE")

        def one_runs_two_wait_for_the_node() -> bool:
            # Slurm's reason is `None` for a moment before its scheduler has looked.
            reasons_given = all("Resources" in job.reason or "Priority" in job.reason for job in waiting.all())
            return sorted(statuses(batch)) == ["RUNNABLE", "RUNNABLE", "RUNNING"] and len(external_ids(batch)) == 3 and reasons_given

        drive(loop, one_runs_two_wait_for_the_node, timeout=60)
        assert all(job.reason.startswith(f"Queued as {job.attempt_records.get().external_id}: ") for job in waiting.all())
        ids = external_ids(batch)
        assert in_squeue(ids) == set(ids)
        # A retry is refused while the cancel is still on its way to Slurm.
        result = cancel_batch(batch=batch, by=alice)
        assert result.changed == 3
        with pytest.raises(Exception, match="still stopping"):
            retry_failed_jobs(jobs=Job.objects.filter(batch=batch))
        drive(loop, all_finished(batch), timeout=60)
        # The job script reports its end as soon as its program is gone; Slurm lists
        # the job a moment longer while it cleans up (COMPLETING).
        wait_for(lambda: not in_squeue(ids), timeout=30, message="scancel left jobs in the queue")
    finally:
        loop.stop()
    for job in Job.objects.filter(batch=batch):
        assert (job.status, job.reason) == ("FAILED", "Cancelled by user")
        assert job.attempt_records.get().state == "ENDED"


def test_deleting_a_batch_scancels_its_slurm_jobs(alice, catalog, slurm):
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 120"}} for _ in range(3)])
    loop = slurm_loop()
    try:
        drive(loop, lambda: statuses(batch) == ["RUNNING"] * 3, timeout=60)
        ids = external_ids(batch)
        assert in_squeue(ids) == set(ids)
        delete_batches(batches=Batch.objects.filter(pk=batch.pk))
        drive(loop, lambda: not loop.executor.active(), timeout=60)
    finally:
        loop.stop()
    wait_for(lambda: not in_squeue(ids), timeout=30, message="the deleted batch's jobs still run in Slurm")
    assert not Job.objects.filter(batch_id=batch.pk).exists()


def lost_answer_sbatch(tmp_path: Path, *, before: str = "", after: str = "") -> str:
    """A folder of Slurm commands whose sbatch runs the real one, then fails as a
    timed-out connection does: the job reaches the controller, its answer is lost.
    `before` and `after`: shell lines run around the real sbatch (the test's own)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "scancel", "sinfo"):
        (bin_dir / name).symlink_to(shutil.which(name))
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        f'#!/bin/sh\n{before}{shutil.which("sbatch")} "$@" >/dev/null\n{after}'
        'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2\nexit 1\n'
    )
    sbatch.chmod(0o755)
    return str(bin_dir)


def test_a_lost_sbatch_answer_is_found_again_not_submitted_twice(alice, catalog, slurm, tmp_path):
    """sbatch reaches the controller but its answer never comes back (a wrapper runs the
    real sbatch, then fails as a timed-out connection does)."""
    calls = tmp_path / "sbatch-calls"
    slurm.BATCHES_SLURM_BIN = lost_answer_sbatch(tmp_path, before=f"echo call >> {calls}\n")
    marks = tmp_path / "marks"
    marks.mkdir()
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": f"echo x >> {marks}/$BATCH_JOB_ID"}} for _ in range(5)])
    loop = slurm_loop(cpus=16, memory_mib=4096)
    try:
        drive(loop, all_finished(batch), timeout=60)
    finally:
        loop.stop()
    assert statuses(batch) == ["SUCCEEDED"] * 5
    assert calls.read_text().count("call") == 1, "sent twice"
    assert sorted(path.read_text() for path in marks.iterdir()) == ["x\n"] * 5
    assert len({external_id.split("_")[0] for external_id in external_ids(batch)}) == 1


def test_a_lost_sbatch_answer_of_jobs_that_already_ended_keeps_their_slurm_ids(alice, catalog, slurm, tmp_path):
    """As above, but the failed answer comes only once every job has run and ended (a
    wrapper waits for their ends in the status folder): the worker sees the jobs' ends
    before it has looked the submission up, and must not record them without the Slurm
    ids that would tell an operator where to look (sacct)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    slurm.BATCHES_SLURM_BIN = lost_answer_sbatch(
        tmp_path,
        after=f'for i in $(seq 300); do [ "$(ls {marks} | wc -l)" -ge 3 ] && break; sleep 0.1; done\n'
        "sleep 1\n",  # the job scripts write their exit files after the marks
    )
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": f"echo x >> {marks}/$BATCH_JOB_ID"}} for _ in range(3)])
    loop = slurm_loop(cpus=16, memory_mib=4096)
    try:
        drive(loop, all_finished(batch), timeout=90)
    finally:
        loop.stop()
    assert statuses(batch) == ["SUCCEEDED"] * 3
    ids = external_ids(batch)
    assert len(ids) == 3 and len({external_id.split("_")[0] for external_id in ids}) == 1, ids


def test_a_restarted_worker_adopts_slurm_jobs_and_none_is_lost_or_run_twice(alice, catalog, slurm, tmp_path):
    marks, release = tmp_path / "marks", tmp_path / "release"
    marks.mkdir()
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": held_jobs_script(marks, release)}} for _ in range(6)])
    env = {"BATCHES_EXECUTOR": "slurm", "BATCHES_SLURM_DIR": str(tmp_path / "slurm"), "BATCHES_SLURM_POLL_MS": "200"}
    first = start_worker(**env)
    try:
        wait_for(lambda: statuses(batch) == ["RUNNING"] * 6 and len(list(marks.iterdir())) == 6, timeout=60)
        ids = external_ids(batch)
        assert stop_worker_process(first) is not None and first.returncode == 0
        assert statuses(batch) == ["RUNNING"] * 6, "a stopping worker must not cancel or requeue Slurm jobs"
        assert in_squeue(ids) == set(ids)
    except BaseException:
        release.write_text("")
        stop_worker_process(first)
        raise
    hand_over(batch, env=env, first=first, marks=marks, release=release, count=6)


def test_an_attempt_whose_worker_died_before_recording_its_slurm_id_is_adopted(alice, catalog, slurm, tmp_path):
    """The worker sent the array and died before writing the external ids: the next
    worker finds the attempts in the submission's manifest, and one that never reached
    Slurm runs again without using up an attempt."""
    batch = make_batch(alice, script_tool(), catalog, [{"args": {"script": "echo once"}}])
    job = Job.objects.get(batch=batch)
    loop = slurm_loop()
    first = loop.executor
    specs, _ = claim_jobs(worker=loop.worker, room=first.capacity(), fits=first.capacity(), limit=10)
    assert first.submit(specs) == []
    # The second executor knows only the database's (empty) external id.
    second = SlurmExecutor()
    live = LiveAttempt(job_id=str(job.pk), attempt=1, log_id=str(job.log_id), external_id="", timeout_seconds=60, memory_mib=256, cpu=1)
    never = LiveAttempt(job_id="0" * 32, attempt=1, log_id="x", external_id="", timeout_seconds=60, memory_mib=256, cpu=1)
    reports = second.adopt([live, never])
    assert [(r.job_id, r.reason, r.charged) for r in reports] == [("0" * 32, "never reached Slurm", False)]
    ended: list[Outcome] = []
    deadline = time.monotonic() + 30
    while not ended and time.monotonic() < deadline:
        ended = [r for r in second.collect_within(0.5) if isinstance(r, Outcome)]
    assert [(o.job_id, o.succeeded) for o in ended] == [(str(job.pk), True)]
    assert log_of(job) == "once\n", "the adopted attempt ran once"
    loop.stop()


def _controller(action: str) -> None:
    subprocess.run([str(SCRIPT), f"{action}-controller"], check=True)  # noqa: S603
    SlurmExecutor._ready = (float("-inf"), None)


@pytest.mark.skipif(not _our_cluster(), reason="stopping slurmctld needs root and a cluster started by scripts/slurm-cluster")
def test_an_idle_worker_notices_an_outage(slurm):
    """With nothing submitted the executor still asks after the controller, so a worker
    that finished its last task before the controller went away claims nothing until it
    is back (it used to offer its whole room and learn of the outage only at sbatch)."""
    executor = SlurmExecutor()
    executor.collect_within(0.3)
    assert executor.free().cpus > 0
    try:
        _controller("stop")
        deadline = time.monotonic() + 20
        while executor.free().cpus and time.monotonic() < deadline:
            executor.collect_within(0.5)
        assert executor.free().cpus == 0, "an idle worker noticed the outage"
    finally:
        _controller("start")
    deadline = time.monotonic() + 30
    while not executor.free().cpus and time.monotonic() < deadline:
        executor.collect_within(0.5)
    assert executor.free().cpus > 0, "and takes work again once the controller is back"


@pytest.mark.skipif(not _our_cluster(), reason="stopping slurmctld needs root and a cluster started by scripts/slurm-cluster")
def test_a_controller_outage_loses_nothing(alice, anon_client, catalog, slurm, tmp_path):
    """slurmctld goes away twice. First while jobs run: they end and are recorded from
    their exit files, /readyz says so, and once the controller is back new work is taken
    again. Then while a job waits for the whole node: it says why it waits, and runs when
    the controller is back. Every job ran once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    cpus = SlurmExecutor().capacity().cpus
    slurm.BATCHES_MAX_CPU = cpus
    slurm.BATCHES_EXECUTOR = "slurm"

    def jobs(count: int, seconds: float = 0) -> list[dict]:
        return [{"args": {"script": f"echo x >> {marks}/$BATCH_JOB_ID; sleep {seconds}"}} for _ in range(count)]

    loop = slurm_loop()
    try:
        running = make_batch(alice, script_tool(), catalog, jobs(2, seconds=2))
        drive(loop, lambda: statuses(running) == ["RUNNING"] * 2, timeout=60)
        _controller("stop")
        # The ends may all be read from the nodes' files before the controller is next
        # asked (a slow stop): the idle worker's ping then tells it of the outage.
        drive(loop, lambda: all_finished(running)() and loop.executor.free().cpus == 0, timeout=60)
        assert statuses(running) == ["SUCCEEDED"] * 2, "ends written by the nodes are recorded during the outage"
        response = anon_client.get("/readyz")
        assert response.status_code == 503 and "Slurm controller" in response.json()["checks"]["executor"]
        _controller("start")
        later = make_batch(alice, script_tool(), catalog, jobs(3))
        drive(loop, all_finished(later), timeout=60)

        busy = make_batch(alice, script_tool(), catalog, jobs(2, seconds=3))
        whole_node = make_batch(alice, script_tool(), catalog, jobs(1), cpu=cpus)
        waiting = Job.objects.filter(batch=whole_node)
        drive(loop, lambda: statuses(busy) == ["RUNNING"] * 2 and "Resources" in waiting.get().reason, timeout=60)
        _controller("stop")
        drive(loop, lambda: "Slurm controller unreachable" in waiting.get().reason, timeout=60)
        assert waiting.get().status == "RUNNABLE"
        _controller("start")
        drive(loop, lambda: all_finished(busy)() and all_finished(whole_node)(), timeout=120)
    finally:
        subprocess.run([str(SCRIPT), "start-controller"], check=False)  # noqa: S603
        loop.stop()
    for batch, count in ((running, 2), (later, 3), (busy, 2), (whole_node, 1)):
        assert statuses(batch) == ["SUCCEEDED"] * count
    assert sorted(path.read_text() for path in marks.iterdir()) == ["x\n"] * 8
    SlurmExecutor._ready = (float("-inf"), None)
    assert anon_client.get("/readyz").status_code == 200
