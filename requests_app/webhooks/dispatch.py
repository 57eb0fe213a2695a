"""From an event to deliveries: one WebhookDelivery per active subscription that wants it and may see it.

Every delivery of one event carries the same body (the ``object`` is the
API representation when the event is dispatched) under its own
``delivery_id``; sending is a task per delivery, enqueued after commit.

Tenancy: a subscription that belongs to an integration (``api_key``) hears
only about objects its user may see — the same ``visible_to`` as the API —
and nothing once the key is revoked. An application's notification channel
(``application``) hears only about that application's objects (the path from
the object to its application is the queryset's ``application_path``, as
``visible_to`` uses it). A subscription with neither is the backup team's own
and hears about everything.

Bodies: signed JSON for the integrations, the same bytes for all of them; a
channel's is its format's rendering (chat.py), made once per format.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Alert, Job
from core.queue import enqueue
from requests_app.models import (
    CHANNEL_EVENTS,
    ClientRequest,
    RestoreRequest,
    WebhookDelivery,
    WebhookFormat,
    WebhookSubscription,
)
from requests_app.webhooks import ALERT_OPEN, Event, chat, representation

log = logging.getLogger(__name__)

DELIVER = "requests_app.tasks.deliver_webhook"


@dataclass(frozen=True)
class Source:
    """Where an event's object comes from and how it is represented."""

    model: type[models.Model]
    represent: Callable[[Any], dict[str, Any]]
    related: tuple[str, ...]


SOURCES: dict[str, Source] = {
    Event.RESTORE_REQUEST_CHANGED: Source(
        RestoreRequest, representation.restore_request, representation.RELATED["restore_request"]
    ),
    Event.CLIENT_REQUEST_CHANGED: Source(
        ClientRequest, representation.client_request, representation.RELATED["client_request"]
    ),
    Event.JOB_CHANGED: Source(Job, representation.job, representation.RELATED["job"]),
    Event.ALERT_RAISED: Source(Alert, representation.alert, representation.RELATED["alert"]),
}

#: requests_app.tasks.announce names a request by its model's ``kind``.
REQUEST_EVENTS = {
    RestoreRequest.kind: Event.RESTORE_REQUEST_CHANGED,
    ClientRequest.kind: Event.CLIENT_REQUEST_CHANGED,
}


def subscribers(event: str) -> list[WebhookSubscription]:
    """Active subscriptions that want ``event``, their integration's user loaded, revoked keys left out."""
    live = WebhookSubscription.objects.filter(active=True).filter(
        Q(api_key__isnull=True) | Q(api_key__revoked_at__isnull=True)
    )
    # event_types is a short JSON list; filtered here because SQLite has no JSON "contains".
    return [sub for sub in live.select_related("api_key__user") if _hears(sub, event)]


def anyone_wants(event: str) -> bool:
    """The cheap question a hot path (an agent's job report) asks before it enqueues anything."""
    active = WebhookSubscription.objects.filter(active=True).only("active", "event_types", "format")
    return any(_hears(sub, event) for sub in active)


def _hears(sub: WebhookSubscription, event: str) -> bool:
    """Wants it, and its format has a message for it (a chat channel saved without events wants all)."""
    return sub.wants(event) and (sub.format == WebhookFormat.PORTAL or event in CHANNEL_EVENTS)


def dispatch(
    event: str,
    pk: int,
    *,
    previous: str | None,
    status: str,
    occurred_at: datetime | None = None,
) -> list[WebhookDelivery]:
    """Queue one delivery of ``event`` about object ``pk`` to every subscription entitled to it."""
    audience = subscribers(event)
    if not audience:
        return []
    source = SOURCES[event]
    related = source.related
    if any(sub.format != WebhookFormat.PORTAL for sub in audience):
        related += chat.RELATED.get(event, ())
    obj = source.model.objects.select_related(*related).filter(pk=pk).first()
    if obj is None:
        return []  # gone since: nothing to tell
    audience = _entitled(audience, source.model, pk)
    if not audience:
        return []
    bodies: dict[str, str] = {}
    for fmt in {sub.format for sub in audience}:
        if fmt == WebhookFormat.PORTAL:
            bodies[fmt] = json.dumps(
                {
                    "event": str(event),
                    "object": source.represent(obj),
                    "previous_status": previous or None,  # null when the object was just created
                    "status": status,
                    "occurred_at": representation.timestamp(occurred_at or timezone.now()),
                },
                separators=(",", ":"),
            )
        else:
            bodies[fmt] = chat.render(fmt, chat.message(event, obj, status=status, previous=previous))
    deliveries = queue(event, [(sub, bodies[sub.format]) for sub in audience])
    log.info("%s about %s #%s: %d delivery(ies) queued", event, source.model.__name__, pk, len(deliveries))
    return deliveries


def queue(event: str, items: list[tuple[WebhookSubscription, str]]) -> list[WebhookDelivery]:
    """Store one delivery per (subscription, body) and enqueue its sending for after the commit."""
    now = timezone.now()
    with transaction.atomic():
        deliveries = WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                subscription=sub,
                delivery_id=uuid.uuid4(),
                event=event,
                body=body,
                created_at=now,
                next_attempt_at=now,
            )
            for sub, body in items
        )
        for delivery in deliveries:
            enqueue(DELIVER, str(delivery.delivery_id))
    return deliveries


def _entitled(audience: list[WebhookSubscription], model: type[models.Model], pk: int):
    """The subscriptions whose integration may see the object; one query per distinct user at most.

    An application's channel: only if the object belongs to that application (one query in all).
    """
    seen: dict[int, bool] = {}
    entitled = []

    @functools.cache
    def owner_application() -> int | None:  # looked up once, and only if a channel asks
        path = model.objects.all().application_path
        return model.objects.filter(pk=pk).values_list(path, flat=True).first()

    for sub in audience:
        if sub.application_id is not None:
            if owner_application() == sub.application_id:
                entitled.append(sub)
            continue
        if sub.api_key_id is None:
            entitled.append(sub)  # the backup team's own subscription
            continue
        user = sub.api_key.user
        if user.pk not in seen:
            seen[user.pk] = model.objects.visible_to(user).filter(pk=pk).exists()
        if seen[user.pk]:
            entitled.append(sub)
    return entitled


# --- The events -----------------------------------------------------------------------------


def request_changed(kind: str, pk: int, previous: str, status: str) -> list[WebhookDelivery]:
    """From requests_app.tasks.announce, which runs after the transition committed."""
    return dispatch(REQUEST_EVENTS[kind], pk, previous=previous, status=status)


def job_changed(job_id: int, previous_state: str, state: str, occurred_at: str | None = None):
    """A job changed state (the task requests_app.tasks.dispatch_job_changed)."""
    when = datetime.fromisoformat(occurred_at) if occurred_at else None
    return dispatch(Event.JOB_CHANGED, job_id, previous=previous_state, status=state, occurred_at=when)


def alert_raised(alert_id: int):
    """An alert was raised (the task requests_app.tasks.dispatch_alert_raised)."""
    created_at = Alert.objects.filter(pk=alert_id).values_list("created_at", flat=True).first()
    if created_at is None:
        return []
    return dispatch(Event.ALERT_RAISED, alert_id, previous=None, status=ALERT_OPEN, occurred_at=created_at)
