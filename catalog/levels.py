"""Backup levels and chains as people read them, and as lists annotate them.

The rule of what can be restored is ``BackupQuerySet.restorable`` (catalog/models.py), and
nothing here decides it again: ``with_restorable`` puts it on each row of a list (one
correlated EXISTS, so a page stays one query); ``dependents_of`` reads the later points of a
chain for the admin's change page. A point's chain and what breaks it are
catalog/services/chains.py's (``chain_of``, ``why_unrestorable``, ``first_breaks``).
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet

from catalog.choices import BackupLevel, Plugin
from catalog.models import Backup, BackupClient, ProtectionPolicy

#: Said wherever owners choose or read a policy that takes incrementals (issue #15).
DATABASE_DUMPS_FULL = "Database dumps (PostgreSQL, MySQL) are always full backups."
#: For the backup team: which plugins take incrementals at all.
ONLY_FILES_INCREMENTAL = (
    "Only file backups take incrementals: database dumps (PostgreSQL, MySQL) and custom commands "
    "are always full backups."
)


def _every(n: int, unit: str) -> str:
    return unit if n == 1 else f"{n} {unit}s"


def level_scheme(policy: ProtectionPolicy) -> str:
    """The policy's levels in a few words, for lists: "full every 7 days", "fulls only"."""
    days, count = policy.full_every_days, policy.full_every_backups
    if days is None and count is None:
        return "fulls only"
    if count is None:
        return f"full every {_every(days, 'day')}"
    if days is None:
        return f"full every {_every(count, 'backup')}"
    return f"full every {_every(days, 'day')} or {_every(count, 'backup')}"


def level_description(policy: ProtectionPolicy) -> str:
    """The policy's levels as a sentence for owners."""
    if not policy.takes_incrementals:
        return "Every backup is a full backup."
    days, count = policy.full_every_days, policy.full_every_backups
    if count is None:
        when = f"every {_every(days, 'day')}"
    elif days is None:
        when = f"every {_every(count, 'backup')}"
    else:
        when = f"every {_every(days, 'day')} or every {_every(count, 'backup')}, whichever comes first"
    return f"A full backup {when}; incremental backups (what changed) in between."


def client_levels(client: BackupClient) -> str:
    """What the client's backups are: its policy's scheme for files, always full for the others."""
    policy = client.policy
    if client.plugin == Plugin.FILES or not policy.takes_incrementals:
        return level_description(policy)
    if client.plugin in (Plugin.POSTGRESQL, Plugin.MYSQL):
        return f"Every backup is a full backup. {DATABASE_DUMPS_FULL}"
    return "Every backup is a full backup: a custom command's output is not incremental."


def level_label(backup: Backup) -> str:
    """ "Full", or "Incremental on #41" (the point it builds on)."""
    if backup.level == BackupLevel.INCREMENTAL:
        return f"Incremental on #{backup.base_id}"
    return BackupLevel(backup.level).label


def with_restorable(backups: QuerySet) -> QuerySet:
    """Each row annotated ``restorable``: whether ``Backup.objects.restorable()`` holds it.

    A correlated EXISTS per row of the page (the full_id index answers the chain part),
    so a list stays one query whatever the chains' length.
    """
    return backups.annotate(restorable=Exists(Backup.objects.restorable().filter(pk=OuterRef("pk"))))


# --- Chains --------------------------------------------------------------------------------------


def _root(backup: Backup) -> int:
    return backup.full_id or backup.pk


def dependents_of(backup: Backup) -> QuerySet:
    """The points that need this one to be restored: later points of its chain, oldest first."""
    return (
        Backup.objects.filter(full_id=_root(backup), taken_at__gt=backup.taken_at)
        .only("pk", "level", "base_id", "full_id", "taken_at", "status", "verification", "legal_hold")
        .order_by("taken_at", "pk")
    )
