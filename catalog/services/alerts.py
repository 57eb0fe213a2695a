"""Raising and resolving alerts: one open alert per condition, however often a watch runs."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog.models import Alert, BackupClient, Job
from catalog.signals import alert_raised


def raise_alert(*, kind: str, severity: str, key: str, message: str, **links) -> Alert | None:
    """Open an alert for ``key`` unless one is already open; return the new alert or None.

    The partial unique constraint ``alert_one_open_per_key`` is the real guard:
    two watchers racing both try to insert and one of them gets IntegrityError.
    """
    if Alert.objects.filter(key=key, resolved_at__isnull=True).exists():
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(kind=kind, severity=severity, key=key, message=message, **links)
    except IntegrityError:
        return None
    transaction.on_commit(lambda: alert_raised.send(sender=Alert, alert_id=alert.pk))
    return alert


def raise_client_alert(
    kind: str,
    severity: str,
    client: BackupClient,
    message: str,
    *,
    job: Job | None = None,
    link_agent: bool = True,
) -> Alert | None:
    """``raise_alert`` about ``client``, keyed by ``client_key(kind, client)``.

    The alert names the client's application, the client, and (``link_agent``)
    the agent concerned: the job's when there is a job, else the client's.
    """
    links = {"application_id": client.application_id, "client_id": client.pk}
    if link_agent:
        links["agent_id"] = job.agent_id if job is not None else client.agent_id
    if job is not None:
        links["job"] = job
    key = client_key(kind, client.pk)
    return raise_alert(kind=kind, severity=severity, key=key, message=message, **links)


def resolve_alerts(key: str) -> int:
    """Close the open alert for ``key`` (the condition has cleared); returns how many closed."""
    return Alert.objects.filter(key=key, resolved_at__isnull=True).update(resolved_at=timezone.now())


def acknowledge(alerts: QuerySet[Alert], *, by) -> int:
    """Record who acknowledged ``alerts`` and when; returns how many were newly acknowledged."""
    # Conditional update: an alert keeps whoever acknowledged it first.
    return alerts.filter(acknowledged_at__isnull=True).update(
        acknowledged_at=timezone.now(), acknowledged_by=by
    )


def client_key(kind: str, client_id: int) -> str:
    return f"{kind}:client:{client_id}"


def agent_key(kind: str, agent_id: int) -> str:
    return f"{kind}:agent:{agent_id}"


def target_key(kind: str, target_id: int) -> str:
    return f"{kind}:target:{target_id}"
