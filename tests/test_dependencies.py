"""Batch dependencies: `depends_on` at submission, a dependent batch's jobs held PENDING
until the batches it names have succeeded or ended, failed when that can no longer be,
with real processes through the in-process worker loop and the local executor."""

import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from batches.models import Batch, BatchDependency
from core.ids import uuid7
from jobs.dispatch import dispatch_submitted
from jobs.models import Job
from jobs.removal import delete_batches
from jobs.services import retry_failed_jobs
from jobs.statuses import Status
from jobs.transitions import transition
from tests.conftest import submission
from tests.worker_helpers import all_finished, drive, in_process_loop, make_batch, script_tool, statuses

pytestmark = pytest.mark.django_db


@pytest.fixture
def loop():
    loop = in_process_loop()
    yield loop
    loop.stop()


def held(release: Path, *, code: int = 0) -> dict[str, Any]:
    """A job that waits until `release` exists, then exits with `code`."""
    return {"args": {"script": f"while [ ! -e {release} ]; do sleep 0.05; done; exit {code}"}}


def echo(n: int) -> list[dict[str, Any]]:
    return [{"args": {"message": f"job {i}"}} for i in range(n)]


def after(batch: Batch, condition: str = "succeeded") -> list[dict[str, Any]]:
    return [{"batch_id": str(batch.pk), "condition": condition}]


def reasons(batch: Batch) -> set[str]:
    return set(Job.objects.filter(batch=batch).values_list("reason", flat=True))


def started(batch: Batch) -> bool:
    return Job.objects.filter(batch=batch, start_time__isnull=False).exists()


# --- behaviour, with real processes --------------------------------------------------


def test_waits_for_every_job_to_succeed_then_runs(loop, alice, catalog, tmp_path):
    release = tmp_path / "release"
    a = make_batch(alice, script_tool(), catalog, [held(release) for _ in range(2)])  # the loop has 2 cpus
    b = make_batch(alice, catalog["tools"]["echo"], catalog, echo(2), depends_on=after(a))
    drive(loop, lambda: statuses(a) == ["RUNNING"] * 2 and statuses(b) == ["PENDING"] * 2)
    assert reasons(b) == {f"Waiting for batch {a.pk} to succeed (0 of 2 jobs ended)"}
    sweeps = time.monotonic() + 2.5  # two sweeps of the elected worker (HOUSEKEEPING_SECONDS)
    while time.monotonic() < sweeps:
        loop.step()
    assert statuses(b) == ["PENDING"] * 2 and not started(b)
    release.write_text("")
    drive(loop, all_finished(b))
    assert statuses(a) == ["SUCCEEDED"] * 2 and statuses(b) == ["SUCCEEDED"] * 2
    a_ended = max(Job.objects.filter(batch=a).values_list("stop_time", flat=True))
    assert min(Job.objects.filter(batch=b).values_list("start_time", flat=True)) >= a_ended


def test_a_failed_job_fails_the_dependent_and_a_retry_does_not_bring_it_back(loop, alice, catalog, tmp_path):
    release = tmp_path / "release"
    fails_once = {"args": {"script": f'while [ ! -e {release} ]; do sleep 0.05; done; [ "$BATCH_ATTEMPT" -gt 1 ] || exit 3'}}
    a = make_batch(alice, script_tool(), catalog, [held(release), fails_once])
    b = make_batch(alice, catalog["tools"]["echo"], catalog, echo(3), depends_on=after(a))
    drive(loop, lambda: statuses(b) == ["PENDING"] * 3)
    release.write_text("")
    drive(loop, all_finished(b))
    assert statuses(a) == ["SUCCEEDED", "FAILED"]
    assert statuses(b) == ["FAILED"] * 3 and not started(b)
    assert reasons(b) == {f"Dependency failed: batch {a.pk} has a FAILED job (asked: succeeded)"}
    # A retry of the batch depended on does not resurrect its dependents, even once it
    # has all succeeded.
    assert retry_failed_jobs(jobs=Job.objects.filter(batch=a)) == 1
    drive(loop, all_finished(a))
    dispatch_submitted()
    assert statuses(a) == ["SUCCEEDED"] * 2 and statuses(b) == ["FAILED"] * 3 and not started(b)


def test_ended_lets_the_dependent_run_whatever_the_outcome(loop, alice, catalog, tmp_path):
    release = tmp_path / "release"
    a = make_batch(alice, script_tool(), catalog, [held(release), held(release, code=3)])
    b = make_batch(alice, catalog["tools"]["echo"], catalog, echo(2), depends_on=after(a, "ended"))
    drive(loop, lambda: statuses(b) == ["PENDING"] * 2 and statuses(a) == ["RUNNING"] * 2)
    assert reasons(b) == {f"Waiting for batch {a.pk} to end (0 of 2 jobs ended)"}
    release.write_text("")
    drive(loop, all_finished(b))
    assert statuses(a) == ["SUCCEEDED", "FAILED"] and statuses(b) == ["SUCCEEDED"] * 2


def test_every_condition_must_hold(loop, alice, catalog, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    a1 = make_batch(alice, script_tool(), catalog, [held(first)])
    a2 = make_batch(alice, script_tool(), catalog, [held(second, code=1)])
    b = make_batch(alice, catalog["tools"]["echo"], catalog, echo(1), depends_on=[*after(a1), *after(a2, "ended")])
    drive(loop, lambda: statuses(b) == ["PENDING"] and statuses(a2) == ["RUNNING"])
    assert reasons(b) == {f"Waiting for batch {a1.pk} to succeed (0 of 1 jobs ended) (and 1 more batch)"}
    first.write_text("")
    drive(loop, lambda: reasons(b) == {f"Waiting for batch {a2.pk} to end (0 of 1 jobs ended)"})
    assert statuses(a1) == ["SUCCEEDED"] and statuses(b) == ["PENDING"]
    second.write_text("")
    drive(loop, all_finished(b))
    assert statuses(b) == ["SUCCEEDED"]


def test_deleting_the_batch_depended_on_fails_the_dependent(loop, alice, catalog, tmp_path):
    release = tmp_path / "release"
    a = make_batch(alice, script_tool(), catalog, [held(release)])
    b = make_batch(alice, catalog["tools"]["echo"], catalog, echo(2), depends_on=after(a, "ended"))
    drive(loop, lambda: statuses(b) == ["PENDING"] * 2)
    delete_batches(batches=Batch.objects.filter(pk=a.pk))
    release.write_text("")
    drive(loop, all_finished(b))
    assert statuses(b) == ["FAILED"] * 2
    assert reasons(b) == {f"Dependency failed: batch {a.pk} was deleted (asked: ended)"}
    assert BatchDependency.objects.filter(batch=b, depends_on_id=a.pk).exists()  # the purge of `a` left it


# --- dispatch alone ------------------------------------------------------------------


def finish(batch: Batch, index: int, status: str = Status.SUCCEEDED) -> None:
    job = Job.objects.get(batch=batch, index=index)
    transition(job_ids=[job.pk], from_statuses=[Status.SUBMITTED, Status.PENDING], to_status=Status.RUNNABLE)
    transition(job_ids=[job.pk], from_statuses=[Status.RUNNABLE], to_status=Status.STARTING)
    transition(job_ids=[job.pk], from_statuses=[Status.STARTING], to_status=status)


def test_the_reason_follows_the_batch_depended_on(alice, catalog):
    a = make_batch(alice, catalog["tools"]["echo"], catalog, echo(4))
    b = make_batch(alice, catalog["tools"]["echo"], catalog, echo(3), depends_on=after(a))
    Job.objects.filter(batch=a).update(status=Status.PENDING)  # a waits for a worker: kept out of the way
    Job.objects.filter(batch=a, index__lt=2).update(status=Status.SUBMITTED)
    finish(a, 0)
    dispatch_submitted()
    assert statuses(b) == ["PENDING"] * 3
    assert reasons(b) == {f"Waiting for batch {a.pk} to succeed (1 of 4 jobs ended)"}
    finish(a, 1)
    dispatch_submitted()
    assert reasons(b) == {f"Waiting for batch {a.pk} to succeed (2 of 4 jobs ended)"}


def test_deciding_costs_the_same_however_large_the_batch_depended_on(alice, catalog):
    def queries_of_a_sweep() -> int:
        with CaptureQueriesContext(connection) as captured:
            dispatch_submitted()
        return len(captured)

    small = make_batch(alice, catalog["tools"]["echo"], catalog, echo(2))
    waiting = make_batch(alice, catalog["tools"]["echo"], catalog, echo(2), depends_on=after(small))
    Job.objects.filter(batch=small).update(status=Status.RUNNING)
    dispatch_submitted()
    few = queries_of_a_sweep()
    Job.objects.filter(batch__in=[small, waiting]).update(status=Status.SUCCEEDED)  # out of the way
    large = make_batch(alice, catalog["tools"]["echo"], catalog, echo(2000))
    make_batch(alice, catalog["tools"]["echo"], catalog, echo(2), depends_on=after(large))
    Job.objects.filter(batch=large).update(status=Status.RUNNING)
    dispatch_submitted()
    assert queries_of_a_sweep() == few


# --- the API -------------------------------------------------------------------------


def post(client, catalog, depends_on: Any):
    return client.post("/batches", {**submission(catalog), "depends_on": depends_on}, format="json")


def errors(response) -> dict[str, str]:
    assert response.status_code == 400, response.content
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def test_the_batch_shape_shows_depends_on(alice_client, catalog):
    a = alice_client.post("/batches", submission(catalog), format="json").json()
    c = alice_client.post("/batches", submission(catalog), format="json").json()
    assert a["depends_on"] == []
    wanted = [{"batch_id": a["batch_id"], "condition": "succeeded"}, {"batch_id": c["batch_id"], "condition": "ended"}]
    response = post(alice_client, catalog, wanted)
    assert response.status_code == 201, response.content
    b = response.json()
    assert b["depends_on"] == wanted
    listed = {batch["batch_id"]: batch for batch in alice_client.get("/batches").json()}
    assert listed[b["batch_id"]]["depends_on"] == wanted and listed[a["batch_id"]]["depends_on"] == []
    rows = BatchDependency.objects.filter(batch_id=b["batch_id"]).order_by("id")
    assert [(str(d.depends_on_id), d.condition) for d in rows] == [(a["batch_id"], "succeeded"), (c["batch_id"], "ended")]


def test_another_users_batch_is_refused_as_an_unknown_one(alice_client, bob_client, catalog):
    bobs = bob_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    unknown = str(uuid7())
    theirs = errors(post(alice_client, catalog, [{"batch_id": bobs, "condition": "succeeded"}]))
    assert theirs == {"depends_on[0].batch_id": f"no batch with id {bobs}"}
    nowhere = errors(post(alice_client, catalog, [{"batch_id": unknown, "condition": "succeeded"}]))
    assert nowhere == {"depends_on[0].batch_id": f"no batch with id {unknown}"}
    assert Batch.objects.filter(owner__username="alice").count() == 0


def test_a_deleted_batch_is_unknown(alice_client, catalog):
    gone = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    assert alice_client.delete(f"/batches/{gone}").status_code == 204
    assert errors(post(alice_client, catalog, [{"batch_id": gone, "condition": "ended"}])) == {
        "depends_on[0].batch_id": f"no batch with id {gone}"
    }


def test_no_cycle_can_be_made(alice_client, catalog):
    """A batch can only depend on batches that exist before it: an id not yet given to
    any batch (its own, say) is refused, so following dependencies always goes back in
    time."""
    future = str(uuid7())
    assert errors(post(alice_client, catalog, [{"batch_id": future, "condition": "ended"}])) == {
        "depends_on[0].batch_id": f"no batch with id {future}"
    }
    a = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    b = post(alice_client, catalog, [{"batch_id": a, "condition": "ended"}]).json()["batch_id"]
    for dependency in BatchDependency.objects.all():
        assert dependency.depends_on_id < dependency.batch_id  # uuid7: older ids are smaller
    assert BatchDependency.objects.get(batch_id=b).depends_on_id == Batch.objects.get(pk=a).pk


def test_bad_depends_on(alice_client, catalog):
    a = alice_client.post("/batches", submission(catalog), format="json").json()["batch_id"]
    twice = [{"batch_id": a, "condition": "ended"}, {"batch_id": a.upper(), "condition": "succeeded"}]
    assert errors(post(alice_client, catalog, twice)) == {"depends_on[1].batch_id": f"batch {a} is listed twice"}
    assert set(errors(post(alice_client, catalog, [{"batch_id": a, "condition": "started"}]))) == {"depends_on[0].condition"}
    assert set(errors(post(alice_client, catalog, [{"batch_id": a}]))) == {"depends_on[0].condition"}
    assert set(errors(post(alice_client, catalog, [{"batch_id": 5, "condition": "ended"}]))) == {"depends_on[0].batch_id"}
    assert set(errors(post(alice_client, catalog, [{"batch_id": a, "condition": "ended", "when": 1}]))) == {"depends_on[0].when"}
    assert set(errors(post(alice_client, catalog, {"batch_id": a}))) == {"depends_on"}
    many = [{"batch_id": str(uuid7()), "condition": "ended"} for _ in range(21)]
    assert set(errors(post(alice_client, catalog, many))) == {"depends_on"}
    assert Batch.objects.count() == 1
