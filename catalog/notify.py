"""Alert mail: critical alerts at once, everything else in one daily digest per person.

Who hears about an alert is decided by the same rule as who may see it:

- the application's owners (users in ``Application.owners`` and members of its
  ``owner_group``), active and with an address, hear about that application's
  alerts and nothing else;
- the backup team (``PORTAL_BACKUP_TEAM_EMAIL`` plus the active members of the
  backup-admins group) hears about everything, including alerts that belong to
  no application (a silent agent shared by several, a storage target).

Each alert is mailed at most once: ``emailed_at`` (critical) and
``digested_at`` (digest) are claimed with a conditional UPDATE before anything
is sent, so a task that runs twice, or two workers at once, send nothing twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db.models import Q, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from catalog.choices import AlertSeverity
from catalog.digest import Digest, summarize
from catalog.models import Alert
from core.queue import enqueue

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Backup Portal]"

#: Critical alerts not mailed this long after they were raised are mailed by the sweep
#: (the worker was down, or crashed between the commit and the enqueue).
UNSENT_GRACE = timedelta(minutes=5)
#: ...but not older ones: a first deployment must not mail the whole history.
UNSENT_HORIZON = timedelta(days=1)

_DIGEST_RELATED = ("application", "client", "agent", "storage_target")


# --- Who --------------------------------------------------------------------------------


def backup_team_addresses() -> list[str]:
    """The team's shared address and its active members' own, each once."""
    members = (
        get_user_model()
        .objects.filter(groups__name=settings.PORTAL_BACKUP_TEAM_GROUP, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    addresses = {settings.PORTAL_BACKUP_TEAM_EMAIL, *members}
    return sorted(address for address in addresses if address)


def owners_of(application_ids) -> QuerySet:
    """Active users with an address who own any of ``application_ids``, directly or by group."""
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .exclude(email="")
        .filter(Q(owned_applications__in=application_ids) | Q(groups__owned_applications__in=application_ids))
        .distinct()
        .order_by("pk")
    )


def _url(name: str, **query) -> str:
    url = settings.PORTAL_BASE_URL + reverse(name)
    pairs = urlencode({key: value for key, value in query.items() if value})
    return f"{url}?{pairs}" if pairs else url


# --- Critical alerts, at once ---------------------------------------------------------------


def on_alert_raised(sender, *, alert_id: int, **kwargs) -> None:
    """Queue the mail of a critical alert; the others wait for the digest."""
    if Alert.objects.filter(pk=alert_id, severity=AlertSeverity.CRITICAL).exists():
        enqueue("catalog.tasks.mail_alert", alert_id)


def connect() -> None:
    from catalog.signals import alert_raised

    alert_raised.connect(on_alert_raised, dispatch_uid="catalog.notify.on_alert_raised")


def mail_alert(alert_id: int, *, now: datetime | None = None) -> int:
    """Mail one critical alert to its application's owners and the backup team; returns mails sent."""
    now = now or timezone.now()
    claimed = Alert.objects.filter(
        pk=alert_id, severity=AlertSeverity.CRITICAL, emailed_at__isnull=True
    ).update(emailed_at=now)
    if not claimed:
        return 0  # gone, not critical, or already mailed by an earlier run
    alert = Alert.objects.select_related(*_DIGEST_RELATED).get(pk=alert_id)
    try:
        return _send(_critical_messages(alert))
    except Exception:
        # Nobody was told: give the claim back so the queue's retry (or the sweep) sends it.
        Alert.objects.filter(pk=alert_id, emailed_at=now).update(emailed_at=None)
        raise


def _critical_messages(alert: Alert) -> list[EmailMessage]:
    team = backup_team_addresses()
    owners = []
    if alert.application_id:
        owners = [user.email for user in owners_of([alert.application_id]) if user.email not in team]
    where = alert.application.name if alert.application_id else "shared infrastructure"
    subject = f"{SUBJECT_PREFIX} CRITICAL: {alert.get_kind_display()} in {where}"
    context = {
        "alert": alert,
        "where": where,
        "alerts_url": _url("alerts", application=alert.application.slug if alert.application_id else ""),
        "admin_url": settings.PORTAL_BASE_URL + reverse("admin:catalog_alert_change", args=[alert.pk]),
    }
    messages = []
    if owners:
        body = render_to_string("catalog/email/alert_critical.txt", {**context, "audience": "owners"})
        messages.append(EmailMessage(subject, body, None, owners))
    if team:
        body = render_to_string("catalog/email/alert_critical.txt", {**context, "audience": "team"})
        messages.append(EmailMessage(subject, body, None, team))
    return messages


def mail_unsent_critical(*, now: datetime | None = None) -> int:
    """Mail recent open critical alerts whose mail never went out; returns how many were mailed."""
    now = now or timezone.now()
    unsent = Alert.objects.filter(
        severity=AlertSeverity.CRITICAL,
        emailed_at__isnull=True,
        resolved_at__isnull=True,
        created_at__lte=now - UNSENT_GRACE,
        created_at__gte=now - UNSENT_HORIZON,
    ).values_list("pk", flat=True)
    return sum(bool(mail_alert(pk, now=now)) for pk in unsent[:500])


# --- The daily digest ---------------------------------------------------------------------------


def send_digests(*, now: datetime | None = None) -> int:
    """One digest per person of the non-critical alerts raised since the last one; returns mails sent.

    The batch is claimed first (``digested_at = now``): a second run, or one
    racing this one, finds nothing left. If no mail at all could be sent (the
    mail server is down) the claim is given back and the task fails, so the
    next run sends them; if only some recipients failed, the others are not
    mailed twice.
    """
    now = now or timezone.now()
    claimed = (
        Alert.objects.filter(digested_at__isnull=True, created_at__lte=now)
        .exclude(severity=AlertSeverity.CRITICAL)
        .update(digested_at=now)
    )
    if not claimed:
        return 0
    batch = Alert.objects.filter(digested_at=now).select_related(*_DIGEST_RELATED)
    messages = _digest_messages(batch, now)
    try:
        sent = _send(messages, tolerate_failures=True)
    except Exception:
        Alert.objects.filter(digested_at=now).update(digested_at=None)
        raise
    return sent


def _digest_messages(batch: QuerySet[Alert], now: datetime) -> list[EmailMessage]:
    team = backup_team_addresses()
    messages = []
    if team:
        # The team sees every alert, those of no application included: one digest, all of them.
        messages.append(_digest_message(summarize(batch), team, name="", now=now))
    application_ids = {pk for pk in batch.values_list("application_id", flat=True) if pk}
    for user in owners_of(application_ids):
        if user.email in team:
            continue  # already has the team's digest, which holds everything
        # Tenancy decides what a person reads about: the same queryset as the portal's.
        digest = summarize(batch.visible_to(user))
        if digest.alerts:
            name = user.get_full_name() or user.get_username()
            messages.append(_digest_message(digest, [user.email], name=name, now=now))
    return messages


def _digest_message(digest: Digest, to: list[str], *, name: str, now: datetime) -> EmailMessage:
    alerts = f"{digest.alerts} new alert{'s' if digest.alerts != 1 else ''}"
    subject = f"{SUBJECT_PREFIX} Daily alert digest, {timezone.localdate(now):%d %b %Y}: {alerts}"
    sections = [
        {"section": section, "url": _url("alerts", application=section.slug)} for section in digest.sections
    ]
    body = render_to_string(
        "catalog/email/alert_digest.txt",
        {"digest": digest, "sections": sections, "name": name, "alerts_url": _url("alerts")},
    )
    return EmailMessage(subject, body, None, to)


def _send(messages: list[EmailMessage], *, tolerate_failures: bool = False) -> int:
    """Send over one connection. With ``tolerate_failures``, a failed message is logged and
    skipped, and only a run where every message failed raises."""
    if not messages:
        return 0
    sent, failures = 0, 0
    with get_connection() as connection:
        for message in messages:
            message.connection = connection
            try:
                sent += message.send()
            except Exception:
                if not tolerate_failures:
                    raise
                failures += 1
                log.exception("alert digest to %s failed", ", ".join(message.to))
    if failures and not sent:
        raise RuntimeError(f"no alert digest could be sent ({failures} failed)")
    return sent
