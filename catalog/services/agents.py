"""Agents: enrolment with a one-time token, heartbeats, and the silent-agent watch."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog import agent_versions
from catalog import allow_list as allow_lists
from catalog.choices import (
    AgentAction,
    AgentStatus,
    AlertKind,
    AlertSeverity,
    ClientStatus,
    EnrolmentPurpose,
    JobState,
)
from catalog.errors import CatalogError, InvalidEnrolment
from catalog.models import (
    Agent,
    AgentEvent,
    Alert,
    Application,
    BackupClient,
    EnrolmentToken,
    Job,
    agent_heartbeat_period,
    agent_silent_cutoff,
    hash_token,
    new_token,
)
from catalog.services import alerts, jobs
from catalog.signals import agent_enrolled


class AgentCloned(CatalogError):
    """The agent's token was used by another instance than the one it is bound to (409)."""

    code = "agent_cloned"


class AgentUnsupported(CatalogError):
    """The agent speaks an older protocol than ``Agent.OLDEST_PROTOCOL`` (426 Upgrade Required)."""

    code = "agent_unsupported"
    http_status = 426


REKEY_VALID_FOR = timedelta(days=1)


def unsupported_message(protocol: int) -> str:
    """What the refused agent logs, and the alert says: the way out included."""
    portal = settings.PORTAL_BASE_URL.rstrip("/")
    return (
        f"This portal speaks agent protocol {Agent.OLDEST_PROTOCOL} or newer; this agent speaks {protocol}: "
        f"upgrade it with `backup-agent upgrade` or reinstall it from {portal}/agent/install.sh "
        f"(the portal ships backup-agent {agent_versions.shipped_version()})."
    )


def check_protocol(agent: Agent | None, protocol: int) -> None:
    """Refuse (AgentUnsupported) a call from an agent older than the oldest protocol the portal speaks.

    ``agent``: the calling agent (None at enrolment); it gets one open alert
    ``agent_unsupported`` however often it calls, closed by its first supported poll
    (``heartbeat``). A supported protocol costs one comparison.
    """
    if agent_versions.is_supported(protocol):
        return
    message = unsupported_message(protocol)
    if agent is not None:
        apps = list(agent.applications.all())
        alerts.raise_alert(
            kind=AlertKind.AGENT_UNSUPPORTED,
            severity=AlertSeverity.CRITICAL,
            key=alerts.agent_key(AlertKind.AGENT_UNSUPPORTED, agent.pk),
            message=f"Agent {agent.hostname} ({agent.version or 'version unknown'}) is refused, "
            f"its clients get no backups. {message}",
            agent=agent,
            application=apps[0] if len(apps) == 1 else None,
        )
    raise AgentUnsupported(message)


def upgrade_offer(agent: Agent, reported_version: str) -> dict | None:
    """The poll answer's ``upgrade``: for an agent the team switched to automatic upgrades, when outdated.

    From the row the authentication read and the poll's body: no query on an idle poll.
    """
    if agent.auto_upgrade and agent_versions.is_outdated(reported_version):
        return {"version": agent_versions.shipped_version(), "url": "/agent/backup-agent.pyz"}
    return None


def record(agent: Agent, action: str, *, user=None, label: str = "", message: str = "") -> AgentEvent:
    """Append to the agent's audit trail (who, what, why)."""
    return AgentEvent.objects.create(
        agent=agent,
        action=action,
        actor_user=user if getattr(user, "pk", None) else None,
        actor_label=label or (user.get_username() if getattr(user, "pk", None) else "system"),
        message=message,
    )


def _issue(*, purpose: str, hostname: str, application_id: int | None, created_by, valid_for: timedelta):
    """One outstanding token per host: issuing voids the previous ones (the caller holds a transaction)."""
    now = timezone.now()
    EnrolmentToken.objects.filter(hostname=hostname, used_at__isnull=True, voided_at__isnull=True).update(
        voided_at=now
    )
    token = new_token("bpr" if purpose == EnrolmentPurpose.REKEY else "bpe")
    record_ = EnrolmentToken.objects.create(
        token_hash=hash_token(token),
        purpose=purpose,
        application_id=application_id,
        hostname=hostname,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        expires_at=now + valid_for,
    )
    return record_, token


def issue_enrolment_token(
    *, application: Application, hostname: str, created_by=None, valid_for: timedelta | None = None
) -> tuple[EnrolmentToken, str]:
    """A one-time token that enrols a host that has never enrolled; the clear text is returned once.

    The host must be new or registered for ``application`` and not enrolled yet:
    an enrolment token never re-keys an agent (that is ``issue_rekey_token``).
    """
    hostname = hostname.lower()
    with transaction.atomic():
        agent = Agent.objects.select_for_update().filter(hostname=hostname).first()
        if agent is not None and agent.is_enrolled:
            raise InvalidEnrolment(
                f"{hostname} has enrolled before: only the backup team can re-key it (Agents → re-key)."
            )
        if agent is not None and not agent.applications.filter(pk=application.pk).exists():
            raise InvalidEnrolment(f"{hostname} is registered for another application.")
        enrolment, token = _issue(
            purpose=EnrolmentPurpose.ENROL,
            hostname=hostname,
            application_id=application.pk,
            created_by=created_by,
            valid_for=valid_for or timedelta(days=settings.PORTAL_ENROLMENT_TOKEN_DAYS),
        )
        if agent is not None:
            record(agent, AgentAction.TOKEN_ISSUED, user=created_by, message=f"for {application.slug}")
    return enrolment, token


def issue_rekey_token(
    agent: Agent, *, created_by, valid_for: timedelta | None = None
) -> tuple[EnrolmentToken, str]:
    """The backup team's one-time token for a rebuilt server: it gives ``agent`` a new key when used."""
    with transaction.atomic():
        # Two team members re-keying at once: one token per host, so one at a time.
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        enrolment, token = _issue(
            purpose=EnrolmentPurpose.REKEY,
            hostname=agent.hostname,
            application_id=None,
            created_by=created_by,
            valid_for=valid_for or REKEY_VALID_FOR,
        )
        record(agent, AgentAction.REKEY_ISSUED, user=created_by, message="Its use replaces the key.")
    return enrolment, token


def enrol(
    *,
    token: str,
    hostname: str,
    version: str,
    plugins: list[str],
    protocol: int = 1,
    instance: dict | None = None,
) -> tuple[Agent, str]:
    """Exchange a one-time token for the agent's long-lived token.

    An enrolment token creates the agent of a host that has never enrolled (or
    completes one the portal registered for the token's application); a re-key
    token, issued by the backup team, replaces an existing agent's key. Nothing
    else can give a host's jobs to a new key.

    The key is bound to the enrolling ``instance`` (``{"id", "host"}``, newer agents):
    a re-key re-binds it, so a rebuilt server's new instance takes over. Without
    one, the agent binds on its first poll that carries one.
    """
    now = timezone.now()
    with transaction.atomic():
        # Locked: two enrolments racing with the same token, only one wins.
        enrolment = (
            EnrolmentToken.objects.select_for_update()
            .filter(token_hash=hash_token(token), expires_at__gt=now)
            .filter(used_at__isnull=True, voided_at__isnull=True)
            .first()
        )
        if enrolment is None:
            raise InvalidEnrolment("This enrolment token is unknown, expired, replaced or already used.")
        if enrolment.hostname.lower() != hostname.lower():
            raise InvalidEnrolment(f"This enrolment token is for host {enrolment.hostname}, not {hostname}.")
        agent = Agent.objects.select_for_update().filter(hostname=enrolment.hostname.lower()).first()
        if enrolment.purpose == EnrolmentPurpose.REKEY:
            if agent is None:
                raise InvalidEnrolment(f"There is no agent {enrolment.hostname} to re-key.")
            action = AgentAction.REKEYED
        else:
            if agent is not None and agent.is_enrolled:
                raise InvalidEnrolment(
                    f"{agent.hostname} is already enrolled: ask the backup team for a re-key token."
                )
            if agent is None:
                agent = Agent.objects.create(hostname=enrolment.hostname.lower())
            agent.applications.add(enrolment.application_id)
            action = AgentAction.ENROLLED
        agent_token = agent.issue_token()
        agent.version, agent.plugins, agent.protocol = version, plugins, protocol
        agent.enrolled_at = agent.last_seen_at = now
        agent.instance_id = (instance or {}).get("id", "")
        agent.instance_host = (instance or {}).get("host", "")
        agent.save()
        alerts.resolve_alerts(alerts.agent_key(AlertKind.AGENT_CLONED, agent.pk))
        enrolment.used_at, enrolment.agent = now, agent
        enrolment.save(update_fields=["used_at", "agent"])
        activated = _activate_waiting_clients(agent, now)
        record(agent, action, label=agent.hostname, message=f"version {version or 'unknown'}")
        transaction.on_commit(
            lambda: agent_enrolled.send(
                sender=Agent, agent_id=agent.pk, enrolment_token_id=enrolment.pk, client_ids=activated
            )
        )
    return agent, agent_token


def _activate_waiting_clients(agent: Agent, now: datetime) -> list[int]:
    """Clients approved for this host (each for an application the host serves) go live."""
    waiting = list(
        BackupClient.objects.select_related("policy").filter(
            hostname__iexact=agent.hostname,
            application__in=agent.applications.all(),
            status=ClientStatus.PENDING_ENROLMENT,
        )
    )
    for client in waiting:
        client.agent = agent
        client.status = ClientStatus.ACTIVE
        client.next_backup_at = client.policy.next_run_after(now)
    BackupClient.objects.bulk_update(waiting, ["agent", "status", "next_backup_at"])
    return [client.pk for client in waiting]


def check_instance(agent: Agent, instance: dict | None) -> None:
    """One agent, one host: a poll from another instance than the bound one is refused.

    Raises AgentCloned (409 ``agent_cloned``) and raises one critical alert naming
    both hosts; the bound instance keeps working. A poll without ``instance``
    (older agents) is accepted; an agent not bound yet binds to the first instance
    that says who it is. The steady state costs nothing: ``agent`` is the row the
    authentication just read.
    """
    if not instance:
        return
    instance_id, host = instance["id"], instance["host"]
    if agent.instance_id == instance_id:
        return
    if not agent.instance_id:
        # Conditional: two instances binding at once, the first one wins.
        if Agent.objects.filter(pk=agent.pk, instance_id="").update(
            instance_id=instance_id, instance_host=host
        ):
            agent.instance_id, agent.instance_host = instance_id, host
            return
        agent.refresh_from_db(fields=["instance_id", "instance_host"])
        if agent.instance_id == instance_id:
            return
    bound_host = agent.instance_host or "an unnamed host"
    message = (
        f"The token of agent {agent.hostname} is used by a second host: {host} (instance {instance_id}) "
        f"polls with it, but it is bound to {bound_host} (instance {agent.instance_id}). "
        f"{host} is refused; re-key the agent (Agents → re-key) if the server was rebuilt."
    )
    apps = list(agent.applications.all())
    alerts.raise_alert(
        kind=AlertKind.AGENT_CLONED,
        severity=AlertSeverity.CRITICAL,
        key=alerts.agent_key(AlertKind.AGENT_CLONED, agent.pk),
        message=message,
        agent=agent,
        application=apps[0] if len(apps) == 1 else None,
    )
    raise AgentCloned(
        f"This agent's token is bound to {bound_host}; {host} (instance {instance_id}) is another "
        "instance and is refused. If the server was rebuilt, ask the backup team to re-key the agent."
    )


def heartbeat(
    agent: Agent,
    *,
    version: str,
    plugins: list[str],
    allow_list: dict | None = None,
    protocol: int = 1,
    now: datetime | None = None,
) -> bool:
    """Record a poll of ``agent`` (the row its authentication read) when it matters; True if written.

    Written when the agent reports another version, protocol, plugins or allow-list
    than its row holds, when it had never polled, and when its recorded last poll
    is ``agent_heartbeat_period()`` old (which includes every agent that was
    silent): an idle poll in the steady state writes nothing, and ``last_seen_at``
    is precise to that period (``agent_silent_cutoff`` explains why the silent
    watch stays exact). An agent that was silent has its open ``agent_silent``
    alert closed here; one raised in a race with this write is closed by the next
    ``watch_silent_agents``.
    """
    now = now or timezone.now()
    changes = {}
    if agent.version != version:
        changes["version"] = version
    if agent.protocol != protocol:
        changes["protocol"] = protocol
    if agent.plugins != plugins:
        changes["plugins"] = plugins
    # Absent or unusable (an older agent): the last reported allow-list stays.
    if (reported := allow_lists.normalise(allow_list)) is not None and agent.allow_list != reported:
        changes["allow_list"] = reported
    seen = agent.last_seen_at
    if not changes and seen is not None and now - seen < agent_heartbeat_period():
        return False
    changes["last_seen_at"] = now
    Agent.objects.filter(pk=agent.pk).update(**changes)
    for field, value in changes.items():
        setattr(agent, field, value)
    if seen is None or seen < agent_silent_cutoff(now):
        alerts.resolve_alerts(alerts.agent_key(AlertKind.AGENT_SILENT, agent.pk))
    if "protocol" in changes and agent_versions.is_supported(protocol):
        alerts.resolve_alerts(alerts.agent_key(AlertKind.AGENT_UNSUPPORTED, agent.pk))
    return True


def watch_silent_agents(*, now: datetime | None = None) -> int:
    """Alert once per silence for agents that stopped polling; returns alerts raised.

    Also closes the silent alerts of agents online again: a poll closes the alert
    when it records the end of a silence, but an alert raised in a race with that
    poll would otherwise stay open (the next polls write nothing). One UPDATE.
    """
    now = now or timezone.now()
    Alert.objects.open().filter(
        kind=AlertKind.AGENT_SILENT,
        agent__in=Agent.objects.with_status(AgentStatus.ONLINE, now).values("pk"),
    ).update(resolved_at=now)
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


def revoke(agents: QuerySet[Agent], *, by=None) -> int:
    """Revoke the tokens of ``agents``; their next poll gets 401. Returns how many were revoked.

    Their queued jobs are cancelled: no revoked agent will ever claim them, and left queued they
    would stand in the queue's backlog for good (the metrics' oldest queued job, its alert).
    """
    with transaction.atomic():
        # Conditional: an agent already revoked keeps its original revocation time.
        live = list(agents.select_for_update().filter(revoked_at__isnull=True))
        Agent.objects.filter(pk__in=[a.pk for a in live]).update(revoked_at=timezone.now())
        for agent in live:
            record(agent, AgentAction.REVOKED, user=by)
        queued = Job.objects.filter(agent__in=[a.pk for a in live], state=JobState.QUEUED)
        for job_id in queued.values_list("pk", flat=True):
            jobs.cancel(job_id)
    return len(live)
