"""Approval rules: who must approve what. The one place to read and change them.

Each function returns a ``Decision``: whether a person of the backup team must
approve, and why in words the requester sees before submitting. Everything
else (the web form's hint, the API's ``needs_approval``, the services) asks
here.

The rules today:

1. A restore that **overwrites** data in place needs the backup team.
2. A restore onto an agent that does **not serve the backup's application**
   needs the backup team (data crossing an application boundary).
3. Any other restore — a new location, on an agent of the same application —
   is approved by the system.
4. A new client on a **host that belongs to another application** (or whose
   agent was revoked) needs the backup team: sharing a server is their decision
   (``catalog.services.hosts.conflict`` says why).
5. A **custom command** client is the backup team's alone: owners cannot ask
   for one, and the system never approves one.
6. Otherwise a new client is approved by the system when its **policy** says so
   (``ProtectionPolicy.auto_approve_clients``); else by the backup team.
7. **Retiring** a client always needs the backup team: it ends the client's protection
   and, on the host's last client, revokes the agent; the system never approves one.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.choices import Plugin
from catalog.models import Agent, Backup, BackupClient, ProtectionPolicy
from catalog.tenancy import is_backup_team


@dataclass(frozen=True)
class Decision:
    needs_approval: bool
    reason: str


def restore_decision(*, backup: Backup, target_agent: Agent, overwrite: bool) -> Decision:
    if overwrite:
        return Decision(True, "Overwriting existing data needs the backup team's approval.")
    serves_application = target_agent.applications.filter(pk=backup.client.application_id).exists()
    if not serves_application:
        return Decision(
            True,
            f"{target_agent.hostname} does not serve {backup.client.application.name}: "
            "a restore across applications needs the backup team's approval.",
        )
    return Decision(False, "A restore to a new location on your own server is approved automatically.")


def client_decision(*, policy: ProtectionPolicy, plugin: str = "", host_conflict: str = "") -> Decision:
    if host_conflict:
        return Decision(True, host_conflict)
    if plugin == Plugin.COMMAND:
        return Decision(True, "Custom commands are set up by the backup team and always need their approval.")
    if policy.auto_approve_clients:
        return Decision(False, f"New clients on {policy.name} are approved automatically.")
    return Decision(True, f"New clients on {policy.name} need the backup team's approval.")


def retire_decision(*, client: BackupClient) -> Decision:
    return Decision(
        True,
        f"Retiring a client ends its backups (on {client.hostname}): the backup team approves it.",
    )


def may_request_plugin(user, plugin: str) -> bool:
    """Custom commands run as root on the server: only the backup team defines them."""
    return plugin != Plugin.COMMAND or is_backup_team(user)


COMMAND_IS_TEAMS = (
    "Custom commands are the backup team's: ask them to set this client up for you "
    "(files, PostgreSQL and MySQL clients you can request yourself)."
)
