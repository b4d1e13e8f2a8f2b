"""Fair share, priority and max_running: the planner's arithmetic, then real `sleep`
jobs through a worker loop with 8 slots (the numbers of issue 19)."""

import time
from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db.models import Count
from django.utils import timezone

from accounts.models import ShareGroup
from accounts.shares import set_group, set_share
from jobs import fairshare
from jobs.claiming import claim_jobs
from jobs.dispatch import dispatch_submitted
from jobs.executors.base import Capacity
from jobs.fairshare import BatchQueue, Ledger, Standing, plan
from jobs.models import Job, Usage
from tests.worker_helpers import in_process_loop, make_batch, script_tool

pytestmark = pytest.mark.django_db


def standing(user_id, *, weight=1, group=None, group_weight=1, running=0, usage=0.0) -> Standing:
    s = Standing(user_id=user_id, username=str(user_id), weight=weight, group=group, group_weight=group_weight)
    s.running_cpus, s.usage = running, usage
    if group is None:
        s.group_weight = weight
    return s


def queue(batch_id, owner, *, priority=0, max_running=None, running=0, cpu=1, memory=100) -> BatchQueue:
    return BatchQueue(
        batch_id=batch_id, owner_id=owner, cpu=cpu, memory=memory, priority=priority, max_running=max_running, running=running
    )


def counts(picks: list[BatchQueue]) -> dict:
    found: dict = {}
    for q in picks:
        found[q.owner_id] = found.get(q.owner_id, 0) + 1
    return found


def test_slots_follow_the_weights():
    users = {"alice": standing("alice"), "bob": standing("bob", weight=3)}
    picks = plan(Ledger(users=users, batches=[queue("a", "alice"), queue("b", "bob")]), limit=8, cpus=8, memory_mib=10_000)
    assert counts(picks) == {"alice": 2, "bob": 6}


def test_a_newcomer_goes_first_and_a_heavy_user_yields():
    users = {"alice": standing("alice", running=8), "bob": standing("bob")}
    picks = plan(Ledger(users=users, batches=[queue("a", "alice", running=8), queue("b", "bob")]), limit=4, cpus=4, memory_mib=10_000)
    assert counts(picks) == {"bob": 4}


def test_recent_usage_counts_as_cpus_held_lately(settings):
    settings.BATCHES_FAIRSHARE_HALF_LIFE = 60
    # Both hold nothing now; alice held 4 cpus lately (her usage over the mean life).
    users = {"alice": standing("alice", usage=4 * fairshare.mean_life()), "carol": standing("carol")}
    picks = plan(Ledger(users=users, batches=[queue("a", "alice"), queue("c", "carol")]), limit=8, cpus=8, memory_mib=10_000)
    assert counts(picks) == {"carol": 6, "alice": 2}


def test_groups_share_by_their_weights_then_users_inside():
    users = {
        "a1": standing("a1", group="astro", group_weight=1),
        "a2": standing("a2", group="astro", group_weight=1),
        "b1": standing("b1", group="bio", group_weight=1, weight=5),
    }
    batches = [queue("x", "a1"), queue("y", "a2"), queue("z", "b1")]
    picks = plan(Ledger(users=users, batches=batches), limit=8, cpus=8, memory_mib=10_000)
    assert counts(picks) == {"a1": 2, "a2": 2, "b1": 4}, "the groups halve the machine; astro's half is split between its two"


def test_priority_then_age_inside_one_users_work_and_max_running():
    users = {"alice": standing("alice")}
    batches = [queue("01-old", "alice"), queue("02-new", "alice", priority=10, max_running=3)]
    picks = plan(Ledger(users=users, batches=batches), limit=5, cpus=8, memory_mib=10_000)
    assert [q.batch_id for q in picks] == ["02-new"] * 3 + ["01-old"] * 2


def test_what_does_not_fit_is_passed_over_for_what_does():
    users = {"alice": standing("alice"), "bob": standing("bob", running=4)}
    batches = [queue("big", "alice", cpu=4), queue("small", "bob", cpu=1)]
    picks = plan(Ledger(users=users, batches=batches), limit=8, cpus=3, memory_mib=10_000)
    assert counts(picks) == {"bob": 3}, "work-conserving: alice's 4-cpu job cannot start in 3 cpus"


def test_ended_attempts_are_charged_and_decay(alice, settings):
    settings.BATCHES_FAIRSHARE_HALF_LIFE = 100
    now = timezone.now()
    fairshare.charge_ended_attempts(attempts=[(alice.pk, 2, now - timezone.timedelta(seconds=10))], now=now)
    usage = Usage.objects.get(user=alice)
    assert usage.cpu_seconds == pytest.approx(2 * fairshare.mean_life() * (1 - 2 ** (-10 / 100)))
    assert usage.cpu_seconds == pytest.approx(20, rel=0.05), "about the cpu-seconds used, slightly decayed"
    later = fairshare.standings(now=now + timezone.timedelta(seconds=100))
    assert later[alice.pk].usage == pytest.approx(usage.cpu_seconds / 2)


def test_a_second_charge_decays_the_first_and_never_moves_as_of_back(alice, bob, settings):
    """One path on PostgreSQL (an upsert that decays in SQL), another elsewhere: the
    same figures from both."""
    settings.BATCHES_FAIRSHARE_HALF_LIFE = 100
    now = timezone.now()
    fairshare.charge_usage(amounts={alice.pk: 40.0}, now=now)
    fairshare.charge_usage(amounts={alice.pk: 10.0, bob.pk: 5.0, 987_654: 3.0}, now=now + timezone.timedelta(seconds=100))
    rows = {row.user_id: row for row in Usage.objects.all()}
    assert set(rows) == {alice.pk, bob.pk}, "a user who no longer exists is not charged"
    assert rows[alice.pk].cpu_seconds == pytest.approx(40 / 2 + 10)
    assert rows[bob.pk].cpu_seconds == pytest.approx(5)
    later = now + timezone.timedelta(seconds=100)
    assert rows[alice.pk].as_of == later
    fairshare.charge_usage(amounts={alice.pk: 1.0}, now=now)  # a report written late
    row = Usage.objects.get(user=alice)
    assert row.cpu_seconds == pytest.approx(40 / 2 + 10 + 1), "added undecayed"
    assert row.as_of == later, "as_of never goes back"


def test_set_share_command(alice, capsys):
    call_command("set_share", "alice", "--weight", "3", "--group", "astro", "--group-weight", "2")
    assert "alice: weight 3, group astro (weight 2)" in capsys.readouterr().out
    share = alice.share
    assert (share.weight, share.group.name, share.group.weight) == (3, "astro", 2)
    with pytest.raises(CommandError, match="weight: must be between 1 and 1000000, not 0"):
        call_command("set_share", "alice", "--weight", "0")
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("set_share", "nobody", "--weight", "2")


def test_set_group_and_set_share_name_the_field_they_refuse(alice):
    """One write path for groups: set_share makes and weighs them through set_group."""
    group = set_group(name="astro", weight=2)
    assert (group.name, group.weight) == ("astro", 2)
    assert set_group(name="astro").weight == 2, "no weight given: unchanged"
    assert set_share(user=alice, group="astro").group == group and set_group(name="astro").weight == 2
    with pytest.raises(ValidationError) as refused:
        set_group(name="astro", weight=0)
    assert refused.value.message_dict == {"weight": ["must be between 1 and 1000000, not 0"]}
    with pytest.raises(ValidationError) as refused:
        set_share(user=alice, group="not a slug")
    assert list(refused.value.message_dict) == ["group"]
    assert not ShareGroup.objects.filter(name="not a slug").exists()


# Real jobs: `sleep 2` through a worker loop offering 8 cpus.


def sleeper(user, catalog, n: int, **options):
    return make_batch(user, script_tool(), catalog, [{"args": {"script": "sleep 2"}} for _ in range(n)], **options)


def live_by_owner(loop) -> dict[str, int]:
    """Whose jobs the executor runs now (the database may still show jobs that have just
    ended and not been recorded yet)."""
    running = list(loop.executor.active())
    rows = Job.objects.filter(pk__in=running).values_list("batch__owner__username").annotate(n=Count("pk"))
    return dict(rows)


def run_for(loop, seconds: float, sample: Callable[[float], None] | None = None) -> None:
    start = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        loop.step()
        if sample is not None:
            sample(now - start)


def test_bob_with_three_times_alices_weight_holds_six_of_eight_slots(alice, bob, catalog):
    set_share(user=bob, weight=3)
    loop = in_process_loop(cpus=8, memory_mib=8 * 256)
    try:
        sleeper(alice, catalog, 400)
        run_for(loop, 10)
        assert live_by_owner(loop) == {"alice": 8}
        submitted = time.monotonic()
        bobs = sleeper(bob, catalog, 400)
        while not Job.objects.filter(batch=bobs, status="RUNNING").exists():
            assert time.monotonic() - submitted < 3, "bob's first job did not start within 3 s"
            loop.step()
        windows: dict[int, list[int]] = {}
        run_for(loop, 40, lambda t: windows.setdefault(int(t // 10), []).append(live_by_owner(loop).get("bob", 0)))
        averages = [sum(samples) / len(samples) for _, samples in sorted(windows.items())]
        assert len(averages) == 4
        assert all(5 <= average <= 7 for average in averages), averages
    finally:
        loop.stop()


def test_a_newcomer_gets_at_least_half_the_slots_while_the_others_usage_decays(alice, bob, root, catalog, settings):
    """Equal weights, a 60 s half-life: alice and bob have held 4 cpus each for long
    (their usage says so), carol (here `root`, a third user) arrives."""
    settings.BATCHES_FAIRSHARE_HALF_LIFE = 60
    loop = in_process_loop(cpus=8, memory_mib=8 * 256)
    try:
        sleeper(alice, catalog, 300)
        sleeper(bob, catalog, 300)
        run_for(loop, 4)
        now = timezone.now()
        for user in (alice, bob):
            Usage.objects.update_or_create(user=user, defaults={"cpu_seconds": 4 * fairshare.mean_life(), "as_of": now})
        run_for(loop, 4)
        sleeper(root, catalog, 300)
        samples: list[int] = []
        run_for(loop, 30, lambda t: samples.append(live_by_owner(loop).get(root.username, 0)))
        assert sum(samples) / len(samples) >= 4, f"carol held {sum(samples) / len(samples):.2f} of 8 slots on average"
    finally:
        loop.stop()


def test_max_running_is_never_exceeded_and_priority_goes_first(alice, catalog):
    loop = in_process_loop(cpus=8, memory_mib=8 * 256)
    try:
        earlier = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 0.3"}} for _ in range(30)])
        capped = make_batch(alice, script_tool(), catalog, [{"args": {"script": "sleep 0.2"}} for _ in range(12)], max_running=2)
        urgent = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}} for _ in range(4)], priority=10)
        most = 0

        def sample(_: float) -> None:
            nonlocal most
            most = max(most, Job.objects.filter(batch=capped, status__in=["STARTING", "RUNNING"]).count())

        run_for(loop, 1, sample)
        while Job.objects.filter(batch__in=[earlier, capped, urgent]).exclude(status__in=["SUCCEEDED", "FAILED"]).exists():
            loop.step()
            sample(0)
        assert most == 2, f"{most} of the max_running=2 batch ran at once"
        first_urgent = Job.objects.filter(batch=urgent).order_by("start_time").values_list("start_time", flat=True).first()
        earlier_starts = list(Job.objects.filter(batch=earlier).order_by("start_time").values_list("start_time", flat=True))
        assert first_urgent <= earlier_starts[0], "the priority-10 batch, submitted last, started first"
        assert set(Job.objects.filter(batch__in=[earlier, capped, urgent]).values_list("status", flat=True)) == {"SUCCEEDED"}
    finally:
        loop.stop()


SHARE_FIELDS = {
    "username",
    "weight",
    "group",
    "group_weight",
    "usage_cpu_seconds",
    "fair_share",
    "current_share",
    "running_jobs",
    "running_cpus",
    "waiting_jobs",
}


def test_get_shares_shows_the_caller_and_an_operator_everyone(alice, bob, alice_client, root_client, catalog):
    set_share(user=bob, weight=3, group="bio", group_weight=2)
    sleeper(alice, catalog, 5)
    sleeper(bob, catalog, 2)
    Usage.objects.create(user=alice, cpu_seconds=120.0, as_of=timezone.now())
    response = alice_client.get("/shares")
    assert response.status_code == 200
    assert response["X-Fairshare-Half-Life"] == "3600"
    [mine] = response.json()
    assert set(mine) == SHARE_FIELDS
    assert mine["username"] == "alice" and (mine["weight"], mine["group"], mine["group_weight"]) == (1, None, None)
    assert mine["usage_cpu_seconds"] == pytest.approx(120.0, rel=0.01)
    assert (mine["waiting_jobs"], mine["running_jobs"], mine["current_share"]) == (5, 0, 0.0)
    # Two groups with work: alice alone (weight 1) and bio (weight 2).
    assert mine["fair_share"] == pytest.approx(1 / 3, abs=1e-3)
    everyone = {row["username"]: row for row in root_client.get("/shares").json()}
    assert {"alice", "bob"} <= set(everyone)
    assert (everyone["bob"]["group"], everyone["bob"]["group_weight"], everyone["bob"]["weight"]) == ("bio", 2, 3)
    assert everyone["bob"]["fair_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert everyone["bob"]["waiting_jobs"] == 2


def test_queue_position_matches_the_order_in_which_jobs_then_start(alice, bob, alice_client, bob_client, catalog):
    """Positions read, then a worker with room for everything claims one job at a time
    (nothing ends meanwhile, as the position assumes): the sampled jobs start in the
    order of their positions, bob's weight of 2 giving him two starts for each of alice's."""
    set_share(user=bob, weight=2)
    alices = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}} for _ in range(12)])
    bobs = make_batch(bob, script_tool(), catalog, [{"args": {"script": "true"}} for _ in range(12)])
    loop = in_process_loop(cpus=24, memory_mib=24 * 256)  # a live worker: dispatch makes the jobs RUNNABLE
    dispatch_submitted()
    sampled = [*Job.objects.filter(batch=alices).order_by("pk")[::4], *Job.objects.filter(batch=bobs).order_by("pk")[1::4]]
    client = {alices.pk: alice_client, bobs.pk: bob_client}
    positions = {str(job.pk): client[job.batch_id].get(f"/jobs/{job.pk}").json()["queue_position"] for job in sampled}
    assert len(set(positions.values())) == len(sampled), positions
    order: list[str] = []
    try:
        for _ in range(24):
            specs, _ = claim_jobs(worker=loop.worker, room=Capacity(24, 24 * 256), fits=Capacity(24, 24 * 256), limit=1)
            order += [spec.job_id for spec in specs]
    finally:
        loop.stop()
    assert len(order) == 24
    assert {job_id: order.index(job_id) + 1 for job_id in positions} == positions


def test_jobs_in_line_say_what_holds_them_in_the_job_list(alice, bob, alice_client, catalog):
    """The job list gives each waiting job the reason JobDetail gives (without its place
    in line): the fair-share figures, or its batch's max_running once that many run."""
    held = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}} for _ in range(3)], max_running=1)
    waiting = make_batch(alice, script_tool(), catalog, [{"args": {"script": "true"}} for _ in range(3)])
    loop = in_process_loop(cpus=8, memory_mib=8 * 256)
    try:
        dispatch_submitted()
        first = Job.objects.filter(batch=held).order_by("index").first()  # claims take a batch's jobs in its order
        claim_jobs(worker=loop.worker, room=Capacity(1, 256), fits=Capacity(1, 256), limit=1)  # the max_running=1 batch's first job
        assert Job.objects.get(pk=first.pk).status == "STARTING"
        rows = alice_client.get(f"/batches/{held.pk}/jobs").json()
        in_line = [row for row in rows if row["status"] == "RUNNABLE"]
        assert len(in_line) == 2
        assert all(row["reason"].startswith("Its batch runs at most 1 job(s) at once (1 running)") for row in in_line), in_line
        rows = alice_client.get(f"/batches/{waiting.pk}/jobs").json()
        assert all("fair share: you hold 1 of 1 running cpu(s) (100%)" in row["reason"] for row in rows), rows
        assert all("in line before it" not in row["reason"] for row in rows)
        detail = alice_client.get(f"/jobs/{rows[0]['job_id']}").json()
        assert detail["reason"].startswith(rows[0]["reason"].split(" (fair share")[0])
    finally:
        loop.stop()
