"""The webhook sender's heads (`jobs.webhook_delivery`): only each (webhook, batch)'s
oldest pending delivery has a next_try; a batch whose head ended without handing it on
is not left waiting forever."""

import time
import uuid
from datetime import timedelta

from django.test.utils import override_settings
from django.utils import timezone

from jobs.models import Delivery
from jobs.webhook_delivery import Sender, restore_heads
from tests.test_webhook_sharing import hook
from tests.test_webhooks import Receiver


@override_settings(BATCHES_WEBHOOK_ALLOW_PRIVATE=True)
def test_a_batch_whose_head_ended_without_handing_on_is_sent_by_the_next_sender(alice, db):
    """docs/deploy.md migrates before the new code serves: between the migration (which
    leaves the later deliveries of a batch with no next_try) and its restart, the
    sender of before ends a head as it always did, handing nothing on."""
    receiver = Receiver()
    webhook = hook(alice, receiver.url)
    batch = uuid.uuid4()
    head, later = (
        Delivery.objects.create(webhook=webhook, event_id=n, event_type="job.failed", batch_id=batch, payload={"n": n}, next_try=next_try)
        for n, next_try in ((1, timezone.now()), (2, None))
    )
    # What the previous sender's record() wrote for a 2xx, and nothing else.
    head.state, head.delivered, head.tries = Delivery.State.DELIVERED, timezone.now(), [{"status": 200}]
    head.save(update_fields=["tries", "state", "delivered", "next_try"])
    sender = Sender()
    try:
        deadline = time.monotonic() + 5
        while not receiver.got and time.monotonic() < deadline:
            sender.step()
            time.sleep(0.05)
        assert [body for _, body, _ in receiver.got] == [b'{"n":2}'], "the batch's later delivery was never tried"
    finally:
        sender.drain(timeout=5)
        receiver.close()
    later.refresh_from_db()
    assert later.state == Delivery.State.DELIVERED


def test_only_a_batch_with_no_head_gets_one_back(alice, db):
    webhook = hook(alice, "http://127.0.0.1:9/")
    later = timezone.now() + timedelta(hours=1)
    backing_off, orphaned = uuid.uuid4(), uuid.uuid4()
    rows = [(backing_off, later), (backing_off, None), (orphaned, None), (orphaned, None)]
    made = [
        Delivery.objects.create(webhook=webhook, event_id=n, event_type="job.failed", batch_id=batch, payload={}, next_try=next_try)
        for n, (batch, next_try) in enumerate(rows)
    ]
    now = timezone.now()
    assert restore_heads(now=now) == 1
    assert [Delivery.objects.get(pk=d.pk).next_try for d in made] == [later, None, now, None]
