"""Sending against a real local receiver: one signed POST per attempt, each logged, backoff, giving up."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from requests_app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from requests_app.webhooks import delivery, signing
from tests.webhooks.receiver import SECRET, Received

BODY = json.dumps(
    {
        "event": "job.changed",
        "object": {"id": 7, "state": "failed", "error": "disk full ✗"},
        "previous_status": "running",
        "status": "failed",
        "occurred_at": "2026-11-26T04:52:20.123456Z",
    },
    separators=(",", ":"),
)


def make_delivery(subscription, **fields) -> WebhookDelivery:
    fields.setdefault("created_at", timezone.now())
    fields.setdefault("next_attempt_at", fields["created_at"])
    return WebhookDelivery.objects.create(
        subscription=subscription, delivery_id=uuid.uuid4(), event="job.changed", body=BODY, **fields
    )


def verified(request, *, now: float | None = None) -> bool:
    """A receiver's check of one received request: signature and timestamp (the docs' rules)."""
    return signing.verify(
        SECRET,
        request.body,
        timestamp=request.headers.get("X-Portal-Timestamp"),
        delivery_id=request.headers.get("X-Portal-Delivery"),
        signature=request.headers.get("X-Portal-Signature"),
        now=now,
    )


def attempt_log(row: WebhookDelivery) -> list[tuple[int | None, str]]:
    return [(a.status_code, a.error) for a in row.attempt_log.order_by("attempted_at", "pk")]


def test_delivery_posts_the_exact_body_signed_with_the_portal_headers(team_subscription, receiver):
    row = make_delivery(team_subscription)

    assert delivery.deliver(str(row.delivery_id)) is True

    [request] = receiver.received
    assert request.path == "/hooks/portal"
    assert request.body == BODY.encode()  # byte for byte what is stored, and signed
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Portal-Event"] == "job.changed"
    assert request.headers["X-Portal-Delivery"] == str(row.delivery_id)
    timestamp = request.headers["X-Portal-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60  # signed when sent
    assert request.headers["X-Portal-Signature"] == signing.sign(
        SECRET, request.body, timestamp=timestamp, delivery_id=str(row.delivery_id)
    )
    assert verified(request)
    assert request.headers["User-Agent"].startswith("BackupPortal-Webhooks/")
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        DeliveryStatus.DELIVERED,
        1,
        200,
        "",
    )
    assert row.delivered_at is not None
    assert attempt_log(row) == [(200, "")]


def test_failing_receiver_is_retried_with_backoff_until_it_answers(team_subscription, receiver):
    receiver.fail_first(3, status=503)
    row = make_delivery(team_subscription)
    start = row.created_at

    delivery.deliver(str(row.delivery_id), now=start)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.next_attempt_at) == (
        DeliveryStatus.PENDING,
        1,
        start + timedelta(seconds=30),
    )
    assert delivery.retry_due(now=start + timedelta(seconds=29)) == 0  # not due yet

    delays = []
    while row.status == DeliveryStatus.PENDING:
        delays.append(row.next_attempt_at - start)
        start = row.next_attempt_at
        assert delivery.retry_due(now=start) == 1
        row.refresh_from_db()

    assert delays == [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2)]
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        DeliveryStatus.DELIVERED,
        4,
        200,
        "",
    )
    assert [code for code, _ in attempt_log(row)] == [503, 503, 503, 200]
    assert all(
        error.startswith("HTTP 503 Service Unavailable: receiver says no")
        for _, error in attempt_log(row)[:3]
    )
    # Every attempt is the same delivery, under the same id, with the same bytes,
    # each signed afresh at its own time: a receiver accepts each one when it arrives.
    assert {r.delivery_id for r in receiver.received} == {str(row.delivery_id)}
    assert {r.body for r in receiver.received} == {BODY.encode()}
    sent_at = [int(r.headers["X-Portal-Timestamp"]) for r in receiver.received]
    assert [t - sent_at[0] for t in sent_at] == [0, 30, 90, 210]
    assert all(verified(r, now=t) for r, t in zip(receiver.received, sent_at, strict=True))


def test_refused_connection_is_an_error_attempt_and_a_retry(subscribe, closed_port_url):
    row = make_delivery(subscribe(closed_port_url))

    assert delivery.deliver(str(row.delivery_id), now=row.created_at) is False

    row.refresh_from_db()
    [attempt] = row.attempt_log.all()
    assert attempt.status_code is None
    assert "Connection refused" in attempt.error
    assert attempt.attempted_at == row.created_at
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.PENDING, 1, None)
    assert row.last_error == attempt.error
    assert row.next_attempt_at == row.created_at + timedelta(seconds=30)


def test_unknown_host_is_an_error_attempt(subscribe):
    row = make_delivery(subscribe("http://no-such-host.invalid/hooks"))

    assert delivery.deliver(str(row.delivery_id)) is False

    [attempt] = row.attempt_log.all()
    assert attempt.status_code is None and attempt.error


def test_a_redirect_is_not_followed_and_counts_as_a_failure(team_subscription, receiver):
    receiver.fail_first(1, status=302)
    row = make_delivery(team_subscription)

    assert delivery.deliver(str(row.delivery_id)) is False

    assert len(receiver.received) == 1  # nothing went to the Location
    row.refresh_from_db()
    assert (row.status, row.last_status_code) == (DeliveryStatus.PENDING, 302)
    assert attempt_log(row)[0][1].startswith("HTTP 302")


def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(team_subscription, receiver, monkeypatch):
    monkeypatch.setattr(delivery, "TIMEOUT_SECONDS", 0.2)
    receiver.delay = 1.0
    row = make_delivery(team_subscription)

    assert delivery.deliver(str(row.delivery_id)) is False

    [attempt] = row.attempt_log.all()
    assert (attempt.status_code, attempt.error) == (None, "Timed out after 0.2 s.")
    assert attempt.duration_ms >= 200


def test_only_http_and_https_are_ever_called(subscribe):
    subscription = subscribe("https://example.com/hooks")
    # Past validation, e.g. written by a script: the sender still refuses.
    WebhookSubscription.objects.filter(pk=subscription.pk).update(url="file:///etc/passwd")
    row = make_delivery(subscription)

    assert delivery.deliver(str(row.delivery_id)) is False

    assert attempt_log(row) == [(None, "Refused: only http and https URLs are called.")]


@pytest.mark.parametrize("url", ["ftp://example.com/hooks", "file:///etc/passwd", "javascript:alert(1)"])
def test_validation_refuses_urls_that_are_not_http(url):
    subscription = WebhookSubscription(name="x", url=url, secret=SECRET)
    with pytest.raises(ValidationError) as exc:
        subscription.full_clean()
    assert "url" in exc.value.message_dict


def test_validation_refuses_unknown_event_types():
    subscription = WebhookSubscription(
        name="x", url="https://example.com/", secret=SECRET, event_types=["job.changed", "job.exploded"]
    )
    with pytest.raises(ValidationError) as exc:
        subscription.full_clean()
    assert exc.value.message_dict == {"event_types": ["Unknown event type(s): job.exploded."]}


@pytest.mark.parametrize(
    "attempts, wait",
    [(1, 30), (2, 60), (3, 120), (4, 240), (7, 1920), (8, 3600), (20, 3600), (500, 3600)],
)
def test_backoff_doubles_from_thirty_seconds_up_to_an_hour(attempts, wait):
    assert delivery.backoff(attempts) == timedelta(seconds=wait)


def test_gives_up_after_24_hours_of_failures(subscribe, receiver):
    receiver.always(500)
    row = make_delivery(subscribe(receiver.url))
    created = row.created_at
    delivery.deliver(str(row.delivery_id), now=created)
    row.refresh_from_db()

    while row.status == DeliveryStatus.PENDING:
        assert row.next_attempt_at <= created + timedelta(hours=24)
        assert delivery.retry_due(now=row.next_attempt_at) == 1
        row.refresh_from_db()

    assert row.status == DeliveryStatus.FAILED
    assert row.delivered_at is None
    times = list(row.attempt_log.order_by("attempted_at").values_list("attempted_at", flat=True))
    assert len(times) == row.attempts == len(receiver.received) == 30
    assert times[-1] - created == timedelta(hours=23, minutes=3, seconds=30)
    assert {code for code, _ in attempt_log(row)} == {500}
    # Given up: nothing is due any more, however late.
    assert delivery.retry_due(now=created + timedelta(days=3)) == 0


def test_a_retry_hours_after_the_event_carries_a_current_timestamp(team_subscription, receiver):
    receiver.fail_first(1, status=503)
    row = make_delivery(team_subscription, created_at=timezone.now() - timedelta(hours=3))

    assert delivery.retry_due() == 1  # fails
    WebhookDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert delivery.retry_due() == 1  # delivered

    first, retry = receiver.received
    assert first.delivery_id == retry.delivery_id == str(row.delivery_id)
    assert verified(retry)  # three hours after the event, yet within the receiver's five minutes
    assert abs(int(retry.headers["X-Portal-Timestamp"]) - time.time()) < 60


def test_a_captured_delivery_replayed_later_is_refused(team_subscription, receiver):
    row = make_delivery(team_subscription)
    delivery.deliver(str(row.delivery_id))
    [captured] = receiver.received
    sent_at = int(captured.headers["X-Portal-Timestamp"])

    assert verified(captured, now=sent_at + 60)
    assert not verified(captured, now=sent_at + signing.TOLERANCE_SECONDS + 1)
    # Nor can the capture be passed off as another delivery, or carry another body.
    other_id = Received(
        captured.path, {**captured.headers, "X-Portal-Delivery": str(uuid.uuid4())}, captured.body
    )
    other_body = Received(captured.path, captured.headers, captured.body.replace(b"disk full", b"all fine"))
    assert not verified(other_id, now=sent_at)
    assert not verified(other_body, now=sent_at)


def test_an_old_delivery_gives_up_after_one_more_failure(subscribe, receiver):
    receiver.always(500)
    row = make_delivery(subscribe(receiver.url), created_at=timezone.now() - timedelta(hours=25))

    delivery.retry_due()

    row.refresh_from_db()
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 1)


def test_a_claimed_delivery_cannot_be_claimed_again(team_subscription):
    row = make_delivery(team_subscription)
    now = timezone.now()

    assert delivery.claim(row.delivery_id, now) is True
    assert delivery.claim(row.delivery_id, now) is False
    # A sender that died mid-send leaves the claim to expire; then it is due again.
    assert delivery.claim(row.delivery_id, now + delivery.CLAIM_LEASE) is True


def test_tasks_return_quietly_when_the_delivery_is_gone(db):
    assert delivery.deliver(str(uuid.uuid4())) is None
    assert delivery.retry_due() == 0


def test_a_delivery_deleted_during_its_attempt_gets_no_attempt_row(team_subscription, monkeypatch):
    row = make_delivery(team_subscription)
    real_send = delivery.send

    def send_then_delete(d, now=None):
        outcome = real_send(d, now)
        WebhookDelivery.objects.filter(pk=d.pk).delete()  # the subscription was removed meanwhile
        return outcome

    monkeypatch.setattr(delivery, "send", send_then_delete)
    assert delivery.deliver(str(row.delivery_id)) is True
    assert not WebhookAttempt.objects.exists()


def test_deliveries_of_an_inactive_subscription_wait(team_subscription, receiver):
    row = make_delivery(team_subscription)
    WebhookSubscription.objects.filter(pk=team_subscription.pk).update(active=False)

    assert delivery.deliver(str(row.delivery_id)) is None
    assert delivery.retry_due() == 0
    assert receiver.received == []

    WebhookSubscription.objects.filter(pk=team_subscription.pk).update(active=True)
    assert delivery.retry_due() == 1
    assert len(receiver.received) == 1


def test_purge_forgets_finished_deliveries_after_30_days(team_subscription):
    old = timezone.now() - timedelta(days=31)
    delivered = make_delivery(team_subscription, created_at=old, status=DeliveryStatus.DELIVERED)
    WebhookAttempt.objects.create(delivery=delivered, status_code=200)
    failed = make_delivery(team_subscription, created_at=old, status=DeliveryStatus.FAILED)
    pending = make_delivery(team_subscription, created_at=old)
    recent = make_delivery(team_subscription, status=DeliveryStatus.DELIVERED)

    delivery.purge()

    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {pending.pk, recent.pk}
    assert not WebhookDelivery.objects.filter(pk__in=[delivered.pk, failed.pk]).exists()
    assert not WebhookAttempt.objects.exists()
