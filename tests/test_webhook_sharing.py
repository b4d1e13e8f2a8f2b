"""The webhook sender shared between users: another user's backlog (deliveries in
backoff, receivers that never answer) neither hides a due delivery nor holds every
thread, and a receiver that never answers does not delay jobs run by a real worker."""

import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.test.utils import override_settings
from django.utils import timezone

from jobs.models import Delivery, Webhook
from jobs.webhook_delivery import Sender
from tests.test_webhooks import Receiver
from tests.worker_helpers import ROOT, all_finished, drive, in_process_loop, make_batch, script_tool, statuses, wait_for, worker_env


class Silent:
    """A receiver on 127.0.0.1 that accepts every connection and never answers, until
    `close`; `accepted` counts the connections."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.server.accept()[0])
            except OSError:  # closed
                return

    @property
    def accepted(self) -> int:
        return len(self.held)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


def deliveries(webhook: Webhook, count: int, **fields) -> None:
    """`count` deliveries, each of a batch of its own (so each may be tried at once)."""
    Delivery.objects.bulk_create(
        Delivery(webhook=webhook, event_id=n, event_type="job.failed", batch_id=uuid.uuid4(), payload={"n": n}, **fields)
        for n in range(count)
    )


def hook(owner, url: str) -> Webhook:
    return Webhook.objects.create(owner=owner, url=url, event_types=["job.failed"], secret="whsec_test")


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True)
def test_a_backlog_in_backoff_does_not_hide_another_users_due_delivery(alice, bob, db):
    # alice's receiver is dead: more deliveries waiting for their next try than the
    # sender used to look at in a step, all older than bob's.
    deliveries(hook(alice, "http://127.0.0.1:9/"), 2001, next_try=timezone.now() + timedelta(hours=1))
    receiver = Receiver()
    sender = Sender()
    try:
        deliveries(hook(bob, receiver.url), 1)
        sender.step()  # one step: bob's try starts in it
        wait_for(lambda: len(receiver.got) == 1, timeout=5, message="bob's delivery was not tried")
    finally:
        sender.drain(timeout=5)
        receiver.close()


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True, BATCHES_WEBHOOK_TIMEOUT_SECONDS=3)
def test_one_users_receivers_that_never_answer_leave_threads_for_the_others(alice, bob, db):
    silent, receiver = Silent(), Receiver()
    sender = Sender(threads=8)
    try:
        # Two dead receivers of alice's, 12 batches waiting on them: more than the pool.
        for webhook in (hook(alice, silent.url), hook(alice, silent.url + "other")):
            deliveries(webhook, 6)
        deliveries(hook(bob, receiver.url), 1)
        started = time.monotonic()
        while not receiver.got:
            assert time.monotonic() - started < 10, "bob's delivery never arrived"
            sender.step()
            time.sleep(0.05)
        assert time.monotonic() - started < 1.5  # while alice's tries hang (3 s)
        assert silent.accepted <= 2  # at most two of the pool's threads are hers
        assert not Delivery.objects.exclude(tries=[]).filter(webhook__owner=alice).exists()
    finally:
        silent.close()  # her tries end at once (connection closed) rather than at the timeout
        sender.drain(timeout=5)
        receiver.close()


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_never_answers_does_not_delay_jobs(alice, catalog):
    """The issue's test: `deliver_webhooks` (a real process) hangs on alice's receiver
    while a real worker loop runs her next batch."""
    silent = Silent()
    hook(alice, silent.url)
    tool = script_tool()
    env = worker_env(BATCHES_WEBHOOK_ALLOW_PRIVATE="1", BATCHES_WEBHOOK_TIMEOUT_SECONDS="60")
    sender = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "deliver_webhooks"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    loop = in_process_loop()
    try:
        failing = make_batch(alice, tool, catalog, [{"args": {"script": "exit 3"}}] * 3)
        drive(loop, all_finished(failing))
        wait_for(lambda: silent.accepted >= 1, timeout=20, message="the sender never tried the receiver")
        batch = make_batch(alice, tool, catalog, [{"args": {"script": "true"}}] * 10)
        started = time.monotonic()
        drive(loop, all_finished(batch), timeout=10)
        elapsed = time.monotonic() - started
        assert statuses(batch) == ["SUCCEEDED"] * 10
        assert elapsed < 3, elapsed
        assert sender.poll() is None and Delivery.objects.filter(tries=[]).exists()  # its try still hangs
    finally:
        loop.stop()
        silent.close()
        sender.terminate()
        _, err = sender.communicate(timeout=20)
    assert sender.returncode == 0, err.decode(errors="replace")
