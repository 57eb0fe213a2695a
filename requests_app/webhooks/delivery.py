"""Sending one delivery: claim it, POST the signed body, log the attempt, schedule the retry or give up.

    pending ──2xx──▶ delivered
       │ └─anything else─▶ pending again, next_attempt_at = now + backoff
       └─a failure past the retry window─▶ failed          (redeliver: back to pending)

Who sends an attempt is decided by a conditional UPDATE (``claim``): only a
pending delivery whose next attempt is due can be claimed, and claiming moves
``next_attempt_at`` past the send, so of two workers — the task enqueued at
dispatch and ``retry_due``, or two ``retry_due`` runs — exactly one gets the
row. No transaction is held open during the HTTP request. A worker that dies
mid-send leaves the claim to expire (``CLAIM_LEASE``), and the delivery is
tried again: at least once, never twice at the same time.

The channels of chat.py travel the same way: Slack and Teams bodies are POSTed
like any other (the signature headers go along, and are ignored there); an
e-mail channel's body is a subject and a text, sent with Django's mail to the
channel's addresses, and a mail server that refuses is retried like a 500.
Before a channel of an application POSTs, its host is resolved and a private
address refused (destinations.py).
"""

from __future__ import annotations

import http.client
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.queue import enqueue
from requests_app.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookFormat,
    WebhookSubscription,
)
from requests_app.webhooks import destinations, signing

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
#: Measured from the delivery's creation; a failure after it gives up.
RETRY_WINDOW = timedelta(hours=24)
#: How long a claim keeps other workers off a delivery. Far longer than one send
#: (TIMEOUT_SECONDS per socket operation), so a live sender never loses its claim.
CLAIM_LEASE = timedelta(minutes=5)
#: retry_due stops claiming after this long, so a run ends before the next minute's starts.
RETRY_BUDGET_SECONDS = 40
RETRY_BATCH = 200
#: Delivered and failed deliveries are kept this long for the admin, then purged.
KEEP_FOR = timedelta(days=30)

USER_AGENT = "BackupPortal-Webhooks/1.0"
SCHEMES = ("http", "https")
ERROR_EXCERPT = 500


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str
    duration_ms: int
    mailed: bool = False  # an e-mail channel's message, accepted by the mail server

    @property
    def delivered(self) -> bool:
        return self.mailed or (self.status_code is not None and 200 <= self.status_code < 300)


def backoff(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failure: 30 s, 1 min, 2 min, 4 min … then every hour."""
    return min(FIRST_RETRY * 2 ** min(attempts - 1, 16), MAX_RETRY)


# --- What the tasks run (requests_app.tasks) -----------------------------------------------


def deliver(delivery_id: str, *, now: datetime | None = None) -> bool | None:
    """Task: try a delivery now if it is due and nobody else is sending it. True if it was delivered."""
    now = now or timezone.now()
    if not claim(delivery_id, now):
        return None  # gone, delivered, given up, not due yet, or another worker has it
    return attempt(delivery_id, now)


def retry_due(*, now: datetime | None = None, limit: int = RETRY_BATCH) -> int:
    """Periodic task (every minute): send the pending deliveries whose next attempt is due."""
    now = now or timezone.now()
    started = time.monotonic()
    due = (
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now, subscription__active=True
        )
        .order_by("next_attempt_at")
        .values_list("delivery_id", flat=True)[:limit]
    )
    sent = 0
    for delivery_id in list(due):
        if time.monotonic() - started > RETRY_BUDGET_SECONDS:
            break  # the next run picks up the rest
        if claim(delivery_id, now):
            attempt(delivery_id, now)
            sent += 1
    return sent


def purge(*, now: datetime | None = None) -> int:
    """Periodic task (daily): forget finished deliveries older than KEEP_FOR, attempts with them."""
    cutoff = (now or timezone.now()) - KEEP_FOR
    deleted, _ = WebhookDelivery.objects.filter(
        status__in=(DeliveryStatus.DELIVERED, DeliveryStatus.FAILED), created_at__lt=cutoff
    ).delete()
    return deleted


def redeliver(pks: list[int], *, now: datetime | None = None) -> list[WebhookDelivery]:
    """Send finished deliveries again, under the same X-Portal-Delivery, so receivers can drop repeats.

    Pending ones are left alone: they retry anyway, and one may be in flight now.
    The retry window still runs from the delivery's creation: an old delivery
    that fails again is marked failed after this one attempt.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            WebhookDelivery.objects.select_for_update()
            .filter(pk__in=pks)
            .exclude(status=DeliveryStatus.PENDING)
        )
        WebhookDelivery.objects.filter(pk__in=[row.pk for row in rows]).update(
            status=DeliveryStatus.PENDING, next_attempt_at=now, delivered_at=None
        )
        for row in rows:
            enqueue("requests_app.tasks.deliver_webhook", str(row.delivery_id))
    return rows


# --- One attempt ---------------------------------------------------------------------------


def claim(delivery_id, now: datetime) -> bool:
    """Take the next attempt of a due delivery; False if it is not due or another worker took it."""
    # Every condition that decides the race is on the delivery row itself: PostgreSQL
    # re-checks those against the committed row after waiting for a concurrent claim.
    # A join (subscription__active) would turn this into "pk IN (subquery)", judged on the
    # snapshot from before the wait, and two workers would both win.
    active = WebhookSubscription.objects.filter(active=True).values("pk")
    return bool(
        WebhookDelivery.objects.filter(
            delivery_id=delivery_id,
            status=DeliveryStatus.PENDING,
            next_attempt_at__lte=now,
            subscription_id__in=active,
        ).update(next_attempt_at=now + CLAIM_LEASE, attempts=F("attempts") + 1)
    )


def attempt(delivery_id, now: datetime) -> bool | None:
    """Send a claimed delivery once and record what happened."""
    delivery = WebhookDelivery.objects.select_related("subscription").filter(delivery_id=delivery_id).first()
    if delivery is None:
        return None
    outcome = send(delivery, now)
    record(delivery, outcome, now)
    return outcome.delivered


def send(delivery: WebhookDelivery, now: datetime | None = None) -> Outcome:
    """POST the stored body, signed; never raises for anything the network or the receiver does.

    Every attempt is signed afresh with its own time (``now``, the attempt's,
    also its ``attempted_at``) and the delivery's unchanging id: a retry a day
    after the event is as current as the first attempt, and receivers refuse
    a timestamp older than a few minutes (signing.TOLERANCE_SECONDS). A run of
    ``retry_due`` shares one ``now`` across RETRY_BUDGET_SECONDS, well within it.
    """
    subscription = delivery.subscription
    if subscription.format == WebhookFormat.EMAIL:
        return _mail(delivery)
    body = delivery.body.encode()
    timestamp = int((now or timezone.now()).timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Portal-Event": delivery.event,
        **signing.headers(
            subscription.secret, body, delivery_id=str(delivery.delivery_id), timestamp=timestamp
        ),
    }
    started = time.monotonic()
    if urlsplit(subscription.url).scheme not in SCHEMES:
        status_code, error = None, "Refused: only http and https URLs are called."
    elif subscription.application_id and (refused := destinations.refusal(subscription.url)):
        status_code, error = None, refused
    else:
        status_code, error = _post(subscription.url, body, headers)
    return Outcome(status_code, error, int((time.monotonic() - started) * 1000))


def _mail(delivery: WebhookDelivery) -> Outcome:
    """An e-mail channel's message: one mail to the channel's addresses."""
    started = time.monotonic()
    message = json.loads(delivery.body)
    to = delivery.subscription.recipients
    try:
        sent = EmailMessage(message["subject"], message["text"], None, to).send()
    except (OSError, smtplib.SMTPException) as exc:
        sent, error = 0, _describe(exc)
    else:
        error = "" if sent else "The mail server accepted nothing."
    return Outcome(None, error, int((time.monotonic() - started) * 1000), mailed=bool(sent))


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    try:
        # The opener has no file: or ftp: handler, and send() checked the scheme.
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
        with _opener().open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(ERROR_EXCERPT)
            return response.status, ""
    except urllib.error.HTTPError as exc:  # any status but 2xx, redirects included
        return exc.code, f"HTTP {exc.code} {exc.reason}{_excerpt(exc)}"
    except urllib.error.URLError as exc:  # refused, DNS, TLS, timeout while connecting
        return None, _describe(exc.reason)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeout reading, reset, bad URL
        return None, _describe(exc)


def _excerpt(exc: urllib.error.HTTPError) -> str:
    """The start of the receiver's answer, which usually says what it disliked."""
    try:
        text = exc.read(ERROR_EXCERPT).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        text = ""
    finally:
        exc.close()
    return f": {text}" if text else ""


def _describe(reason) -> str:
    if isinstance(reason, TimeoutError):
        return f"Timed out after {TIMEOUT_SECONDS} s."
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def _opener() -> urllib.request.OpenerDirector:
    """urllib with no redirects (a 3xx is a failure, never a POST elsewhere) and no file: or ftp: handler."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # honours HTTPS_PROXY / NO_PROXY, as outbound HTTP does elsewhere
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def record(delivery: WebhookDelivery, outcome: Outcome, now: datetime) -> None:
    """Log the attempt; mark the delivery delivered, or schedule the next try, or give up."""
    update: dict = {"last_status_code": outcome.status_code, "last_error": outcome.error}
    if outcome.delivered:
        update.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
    else:
        retry_at = now + backoff(delivery.attempts)
        if retry_at > delivery.created_at + RETRY_WINDOW:
            update.update(status=DeliveryStatus.FAILED)  # gave up
        else:
            update.update(next_attempt_at=retry_at)
    with transaction.atomic():
        # The update locks the row first: a delivery deleted meanwhile (its subscription
        # removed) gets no orphan attempt, and one deleted after waits for this commit.
        if not WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(**update):
            return
        WebhookAttempt.objects.create(
            delivery=delivery,
            attempted_at=now,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
        )
    log.info(
        "webhook %s (%s) to subscription %s, attempt %d: %s",
        delivery.delivery_id,
        delivery.event,
        delivery.subscription_id,
        delivery.attempts,
        "delivered" if outcome.delivered else (outcome.error or outcome.status_code),
    )
