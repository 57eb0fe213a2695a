"""Two retry workers at once: each due delivery is sent exactly once, with one attempt logged."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from requests_app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from requests_app.webhooks import delivery
from tests.webhooks.receiver import SECRET

DUE = 24
WORKERS = 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [WORKERS, 4])
def test_concurrent_retry_runs_send_each_due_delivery_once(receiver, workers):
    receiver.delay = 0.01  # a receiver that takes a moment keeps the workers overlapping
    subscription = WebhookSubscription.objects.create(name="hook", url=receiver.url, secret=SECRET)
    due_since = timezone.now() - timedelta(minutes=1)
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            subscription=subscription,
            delivery_id=uuid.uuid4(),
            event="job.changed",
            body=f'{{"n":{n}}}',
            created_at=due_since,
            next_attempt_at=due_since,
            attempts=1,
        )
        for n in range(DUE)
    )
    barrier = threading.Barrier(workers)
    sent: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait()
            n = delivery.retry_due()
            with lock:
                sent.append(n)
        except BaseException as exc:  # anything else is a bug: surface it
            with lock:
                errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(sent) == DUE
    per_id = Counter(r.delivery_id for r in receiver.received)
    assert len(per_id) == DUE and set(per_id.values()) == {1}
    assert WebhookAttempt.objects.count() == DUE
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {(DeliveryStatus.DELIVERED, 2)}
