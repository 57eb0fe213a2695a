"""Orphan archives: what an agent wrote and still finds on storage, unknown to the catalog.

A backup whose report was lost for good (its retry already ran) leaves its archive
on storage. The agent lists, now and then, every archive it wrote that still exists
(docs/agent-protocol.md, "Orphan archives"); ``record_report`` keeps the agent's
``OrphanArchive`` rows in step with that list and returns what the agent is to remove.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from catalog.choices import BackupStatus
from catalog.models import Agent, Backup, OrphanArchive

#: Locations per ``IN (...)`` and rows per INSERT: well inside SQLite's and PostgreSQL's
#: limits on query parameters whatever the length of the report.
CHUNK = 1000


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _known(backups, locations: Iterable[str]) -> set[str]:
    """Which of ``locations`` are the location of a Backup in ``backups`` (not deleted, any other status)."""
    live = backups.exclude(status=BackupStatus.DELETED)
    known: set[str] = set()
    for chunk in _chunks(sorted(set(locations))):
        known.update(live.filter(location__in=chunk).values_list("location", flat=True))
    return known


def known_locations(agent: Agent, locations: Iterable[str]) -> set[str]:
    """Which of ``locations`` the catalog knows as a backup of one of ``agent``'s clients.

    Matched only within this agent's clients: an agent's list says nothing about
    another agent's backups, and another agent's backups never explain its archives.
    An expired backup (removal queued) is still known: its own expiry job removes it.
    """
    return _known(Backup.objects.filter(client__agent=agent), locations)


def record_report(agent: Agent, archives: list[dict], now: datetime) -> list[str]:
    """Record ``agent``'s list of the archives it wrote that still exist; return those to remove.

    ``archives`` is ``[{"location": <relative>, "size": <bytes>}, ...]``, validated
    (PollSerializer): the agent's whole list, so an empty one means none exist. In
    one transaction:

    - an archive at the location of a Backup of this agent's clients is known: ignored;
    - every other one is an orphan: recorded (found now, removal due after
      ``PORTAL_ORPHAN_GRACE_HOURS``) or, if already recorded, its ``last_seen_at``
      and size updated; the due time never moves;
    - this agent's orphans missing from the list are forgotten (removed, or adopted by
      a late report meanwhile).

    Returns the locations of this agent's orphans whose removal is due at ``now``,
    checked against the catalog once more just before answering; an orphan adopted
    meanwhile is forgotten instead. As a safety net a location that is any client's
    live backup is never returned (see ``_removable``).
    """
    reported: dict[str, int] = {}
    for archive in archives:  # a location listed twice counts once, at its largest size
        reported[archive["location"]] = max(archive["size"], reported.get(archive["location"], 0))
    due_at = now + timedelta(hours=settings.PORTAL_ORPHAN_GRACE_HOURS)
    with transaction.atomic():
        known = known_locations(agent, reported)
        orphans = {location: size for location, size in reported.items() if location not in known}
        stale = [
            pk
            for pk, location in OrphanArchive.objects.filter(agent=agent).values_list("pk", "location")
            if location not in orphans
        ]
        for chunk in _chunks(stale):
            OrphanArchive.objects.filter(pk__in=chunk).delete()
        if orphans:
            # An upsert: a new orphan is found now; a known one keeps found_at and removal_due_at.
            OrphanArchive.objects.bulk_create(
                [
                    OrphanArchive(
                        agent=agent,
                        location=location,
                        size_bytes=size,
                        found_at=now,
                        last_seen_at=now,
                        removal_due_at=due_at,
                    )
                    for location, size in orphans.items()
                ],
                batch_size=CHUNK,
                update_conflicts=True,
                unique_fields=["agent", "location"],
                update_fields=["last_seen_at", "size_bytes"],
            )
        return _removable(agent, now)


def _removable(agent: Agent, now: datetime) -> list[str]:
    """This agent's due orphans, re-checked against the catalog at this moment.

    A late report may have recorded a Backup at one of them since the list was
    matched: that orphan is adopted, forgotten, and not removed. A due location that
    is a live backup of another agent's client is not removed either (a misconfigured
    agent listing a shared storage root would otherwise delete others' backups); it
    stays on the team's list. That second query runs only when something is due.
    """
    due = list(
        OrphanArchive.objects.due(now)
        .filter(agent=agent)
        .order_by("location")
        .values_list("location", flat=True)
    )
    if not due:
        return []
    adopted = known_locations(agent, due)
    for chunk in _chunks(sorted(adopted)):
        OrphanArchive.objects.filter(agent=agent, location__in=chunk).delete()
    elsewhere = _known(Backup.objects.all(), set(due) - adopted)
    return [location for location in due if location not in adopted and location not in elsewhere]
