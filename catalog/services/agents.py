"""Agents: enrolment with a one-time token, heartbeats, and the silent-agent watch."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog.choices import AgentStatus, AlertKind, AlertSeverity, ClientStatus
from catalog.errors import InvalidEnrolment
from catalog.models import Agent, Alert, BackupClient, EnrolmentToken, hash_token
from catalog.services import alerts
from catalog.signals import agent_enrolled


def enrol(*, token: str, hostname: str, version: str, plugins: list[str]) -> tuple[Agent, str]:
    """Exchange a one-time enrolment token for an agent and its long-lived token."""
    now = timezone.now()
    with transaction.atomic():
        # Locked: two enrolments racing with the same token, only one wins.
        enrolment = (
            EnrolmentToken.objects.select_for_update()
            .filter(token_hash=hash_token(token), used_at__isnull=True, expires_at__gt=now)
            .first()
        )
        if enrolment is None:
            raise InvalidEnrolment("This enrolment token is unknown, expired or already used.")
        if enrolment.hostname.lower() != hostname.lower():
            raise InvalidEnrolment(f"This enrolment token is for host {enrolment.hostname}, not {hostname}.")
        agent, _ = Agent.objects.get_or_create(hostname=enrolment.hostname.lower())
        agent_token = agent.issue_token()
        agent.version, agent.plugins = version, plugins
        agent.enrolled_at = agent.last_seen_at = now
        agent.save()
        agent.applications.add(enrolment.application_id)
        enrolment.used_at, enrolment.agent = now, agent
        enrolment.save(update_fields=["used_at", "agent"])
        _activate_waiting_clients(agent, enrolment.application_id, now)
        transaction.on_commit(
            lambda: agent_enrolled.send(sender=Agent, agent_id=agent.pk, enrolment_token_id=enrolment.pk)
        )
    return agent, agent_token


def _activate_waiting_clients(agent: Agent, application_id: int, now: datetime) -> None:
    waiting = list(
        BackupClient.objects.select_related("policy").filter(
            application_id=application_id,
            hostname__iexact=agent.hostname,
            status=ClientStatus.PENDING_ENROLMENT,
        )
    )
    for client in waiting:
        client.agent = agent
        client.status = ClientStatus.ACTIVE
        client.next_backup_at = client.policy.next_run_after(now)
    BackupClient.objects.bulk_update(waiting, ["agent", "status", "next_backup_at"])


def heartbeat(agent: Agent, *, version: str, plugins: list[str], now: datetime | None = None) -> None:
    now = now or timezone.now()
    Agent.objects.filter(pk=agent.pk).update(last_seen_at=now, version=version, plugins=plugins)
    alerts.resolve_alerts(alerts.agent_key(AlertKind.AGENT_SILENT, agent.pk))


def watch_silent_agents(*, now: datetime | None = None) -> int:
    """Alert once per silence for agents that stopped polling; returns alerts raised."""
    now = now or timezone.now()
    raised = 0
    already_alerted = Alert.objects.open().filter(kind=AlertKind.AGENT_SILENT).values("agent_id")
    silent = (
        Agent.objects.with_status(AgentStatus.SILENT, now)
        .exclude(pk__in=already_alerted)
        .prefetch_related("applications")
    )
    for agent in silent.iterator(chunk_size=500):
        apps = list(agent.applications.all())
        alert = alerts.raise_alert(
            kind=AlertKind.AGENT_SILENT,
            severity=AlertSeverity.WARNING,
            key=alerts.agent_key(AlertKind.AGENT_SILENT, agent.pk),
            message=f"Agent {agent.hostname} has not polled since {agent.last_seen_at:%Y-%m-%d %H:%M} UTC.",
            agent=agent,
            application=apps[0] if len(apps) == 1 else None,
        )
        raised += alert is not None
    return raised


def revoke(agents: QuerySet[Agent]) -> int:
    """Revoke the tokens of ``agents``; their next poll gets 401. Returns how many were revoked."""
    # Conditional update: an agent already revoked keeps its original revocation time.
    return agents.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
