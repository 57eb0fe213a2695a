"""The daily alert digest as a summary a person reads in ten seconds, not a log dump.

Alerts are grouped by application ("Shared infrastructure" for those without
one: a silent agent serving several applications, a storage target), then by
kind, and each kind becomes one line that names its subjects:

    Orders
      - 3 clients missed their RPO: db01-pg, files-web, mysql-main

Pure functions over alerts already loaded with their relations: no queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from catalog.choices import AlertKind
from catalog.models import Alert

#: Subjects named on one line before "and N more".
SUBJECTS_SHOWN = 5

SHARED = "Shared infrastructure"

#: One line per kind, for one subject and for several ({n} is the number of subjects).
PHRASES: dict[str, tuple[str, str]] = {
    AlertKind.RPO_BREACHED: ("1 client missed its RPO", "{n} clients missed their RPO"),
    AlertKind.JOB_FAILED: (
        "1 client's backups failed after every retry",
        "{n} clients' backups failed after every retry",
    ),
    AlertKind.AGENT_SILENT: ("1 agent stopped polling", "{n} agents stopped polling"),
    AlertKind.STORAGE_NEARLY_FULL: ("1 storage target is nearly full", "{n} storage targets are nearly full"),
    AlertKind.RESTORE_TEST_FAILED: (
        "1 client failed its restore test",
        "{n} clients failed their restore test",
    ),
    AlertKind.RESTORE_TEST_OVERDUE: (
        "1 client is overdue for a restore test",
        "{n} clients are overdue for a restore test",
    ),
    AlertKind.ANOMALY_DETECTED: (
        "1 client's backup is unlike its history (possible ransomware or mass deletion)",
        "{n} clients' backups are unlike their history (possible ransomware or mass deletion)",
    ),
    AlertKind.STORAGE_FULL_SOON: (
        "1 storage target is forecast to fill",
        "{n} storage targets are forecast to fill",
    ),
    AlertKind.EXPIRED_NOT_REMOVED: (
        "1 retired client's expired backups are left on storage",
        "{n} retired clients' expired backups are left on storage",
    ),
}

#: Kinds in the order of AlertKind (the order people learn them in), not alphabetical.
_KIND_ORDER = {kind: position for position, kind in enumerate(AlertKind.values)}


@dataclass
class Line:
    """One kind of alert in one application: how many subjects, which, how many still open."""

    kind: str
    subjects: list[str] = field(default_factory=list)
    alerts: int = 0
    still_open: int = 0

    @property
    def text(self) -> str:
        n = len(self.subjects)
        one, many = PHRASES.get(self.kind, ("1 × {label}", "{n} × {label}"))
        return (one if n == 1 else many).format(n=n, label=AlertKind(self.kind).label.lower())

    @property
    def shown_subjects(self) -> str:
        shown = ", ".join(self.subjects[:SUBJECTS_SHOWN])
        hidden = len(self.subjects) - SUBJECTS_SHOWN
        return f"{shown} and {hidden} more" if hidden > 0 else shown

    @property
    def resolved(self) -> int:
        return self.alerts - self.still_open


@dataclass
class Section:
    """The digest lines of one application (``slug`` is empty for shared infrastructure)."""

    title: str
    slug: str
    lines: list[Line]


@dataclass
class Digest:
    sections: list[Section]
    alerts: int
    still_open: int

    @property
    def cleared(self) -> int:
        return self.alerts - self.still_open

    @property
    def applications(self) -> int:
        return sum(1 for section in self.sections if section.slug)


def subject_of(alert: Alert) -> str:
    """What the alert is about, in the fewest words: a client, an agent, a storage target."""
    if alert.client_id:
        return alert.client.name
    if alert.agent_id:
        return alert.agent.hostname
    if alert.storage_target_id:
        return alert.storage_target.name
    return alert.message[:60]


def summarize(alerts: Iterable[Alert]) -> Digest:
    """Group ``alerts`` (with application, client, agent and storage target loaded) into a digest."""
    grouped: dict[tuple[str, str], dict[str, Line]] = defaultdict(dict)
    total = still_open = 0
    for alert in alerts:
        app = alert.application
        section_key = (app.name, app.slug) if app else ("", "")
        line = grouped[section_key].setdefault(alert.kind, Line(alert.kind))
        subject = subject_of(alert)
        if subject not in line.subjects:
            line.subjects.append(subject)
        line.alerts += 1
        is_open = alert.resolved_at is None
        line.still_open += is_open
        total += 1
        still_open += is_open
    sections = [
        Section(
            title=name or SHARED,
            slug=slug,
            lines=sorted(lines.values(), key=lambda line: _KIND_ORDER.get(line.kind, len(_KIND_ORDER))),
        )
        # Applications by name; shared infrastructure (no name) last.
        for (name, slug), lines in sorted(grouped.items(), key=lambda item: (not item[0][0], item[0][0]))
    ]
    for section in sections:
        for line in section.lines:
            line.subjects.sort()
    return Digest(sections=sections, alerts=total, still_open=still_open)
