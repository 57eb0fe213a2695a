"""Which applications a host belongs to: the one place that decides, and the one that changes it.

A host belongs to the applications its agent serves. A host the portal has
never seen belongs to nobody until a client request for it is approved: then
the host is registered (an agent row without a key, waiting for enrolment) for
that application. Adding a second application to a host is the backup team's
decision — approving a request that names the host (``register`` under the team's
approval) or editing the agent in the admin (``record_team_change``) — and is written
to the agent's audit trail; nothing else adds one.
"""

from __future__ import annotations

import zlib

from django.db import connection

from catalog.choices import AgentAction, ClientStatus
from catalog.models import Agent, Application, BackupClient, EnrolmentToken
from catalog.services import agents


def lock(hostname: str) -> None:
    """Serialise decisions about one host name until the transaction ends.

    Two owners asking for the same new host at once would each see it free;
    the row that would settle it does not exist yet, so a row lock cannot help.
    On PostgreSQL a transaction-scoped advisory lock on the name does; SQLite
    transactions here are BEGIN IMMEDIATE, so writers are serialised already.
    """
    if connection.vendor == "postgresql":
        key = zlib.crc32(f"host:{hostname.lower()}".encode())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def owners(hostname: str, *, agent: Agent | None = None) -> list[Application]:
    """The applications that hold ``hostname``: its agent's, or those of a token outstanding for it."""
    hostname = hostname.lower()
    agent = agent or Agent.objects.filter(hostname=hostname).first()
    if agent is not None:
        return list(agent.applications.order_by("name"))
    pending = EnrolmentToken.objects.filter(
        hostname=hostname, used_at__isnull=True, voided_at__isnull=True, application__isnull=False
    ).values("application_id")
    return list(Application.objects.filter(pk__in=pending).order_by("name"))


def conflict(hostname: str, application: Application) -> str:
    """Why ``application`` may not simply use ``hostname`` (empty when it may), in the requester's words."""
    hostname = hostname.lower()
    agent = Agent.objects.filter(hostname=hostname).first()
    holders = owners(hostname, agent=agent)
    others = [app for app in holders if app.pk != application.pk]
    if others:
        names = ", ".join(app.name for app in others)
        return (
            f"{hostname} belongs to {names}: only the backup team can share a server between "
            "applications."
        )
    if agent is not None and agent.revoked_at is not None:
        return f"The agent on {hostname} has been revoked: the backup team decides whether it comes back."
    if agent is not None and not holders:
        return f"{hostname} is known to the portal but serves no application: the backup team assigns it."
    return ""


def register(hostname: str, application: Application, *, actor_user=None, actor_label: str = "") -> Agent:
    """The host belongs to ``application`` from now on; the agent row waits for its enrolment.

    The caller holds ``lock(hostname)`` and has checked ``conflict`` (or is the
    backup team deciding to share): this is the only way a host gains an application.
    """
    hostname = hostname.lower()
    agent, created = Agent.objects.get_or_create(hostname=hostname)
    if agent.applications.filter(pk=application.pk).exists():
        return agent
    sharing = agent.applications.exists()
    agent.applications.add(application)
    agents.record(
        agent,
        AgentAction.SHARED if sharing else AgentAction.REGISTERED,
        user=actor_user,
        label=actor_label,
        message=f"Now serves {application.name} ({application.slug}).",
    )
    return agent


def record_team_change(agent: Agent, before: set[str], after: set[str], *, user) -> None:
    """The backup team changed which applications ``agent`` serves (slugs before and after): audit it."""
    for slug in sorted(after - before):
        agents.record(agent, AgentAction.SHARED, user=user, message=f"Now serves {slug}.")
    for slug in sorted(before - after):
        agents.record(agent, AgentAction.UNREGISTERED, user=user, message=f"Stops serving {slug}.")


def unregister_if_unused(agent: Agent, application: Application) -> None:
    """A host registered for a request that was withdrawn before it enrolled is free again."""
    still_wanted = BackupClient.objects.filter(
        hostname__iexact=agent.hostname, application=application
    ).exclude(status=ClientStatus.RETIRED)
    if agent.is_enrolled or still_wanted.exists():
        return
    agent.applications.remove(application)
    agents.record(agent, AgentAction.UNREGISTERED, message=f"No longer held for {application.name}.")
