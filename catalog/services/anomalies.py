"""Anomaly check of every completed backup: figures, verdict, evidence, one alert; acknowledgement.

``evaluate`` runs once per point (task ``catalog.tasks.evaluate_backup``, enqueued when the
backup is recorded; the periodic ``check_anomalies`` catches those a stopped worker missed).
The statistic and every threshold are in ``catalog/anomaly.py``; docs/anomalies.md explains them.

Files new, changed and deleted since the point before come from the two file lists, read
side by side: both walk the tree the same way (folders before their contents, each listing
sorted by the bytes of the names), so one forward merge compares them with memory that does
not grow with the number of files. A file changed when its size or modification time did:
what content changes (encryption) always move, and a ``chmod -R`` does not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from catalog import anomaly
from catalog.choices import AlertKind, AlertSeverity, BackupStatus
from catalog.file_index import DATABASE_KINDS, DIRECTORY, IndexError_, IndexReader
from catalog.models import Alert, Backup, BackupClient
from catalog.services import alerts, file_lists
from identity import mfa as identity_mfa

log = logging.getLogger(__name__)

#: The periodic safety net looks at points taken this recently (older ones are history, not news).
CATCH_UP_DAYS = 3
#: ... and evaluates at most this many per run (every 15 minutes: 19,200 a day).
CATCH_UP_BATCH = 200
#: Blocks a merge keeps decompressed per file list: it reads forward, a couple suffice.
MERGE_BLOCK_CACHE = 4


def alert_key(client_id: int) -> str:
    """One open anomaly alert per client: a tree wiped on Monday is suspicious again in Tuesday's
    backup, and the person paged needs one page, not one per backup (each point is still flagged)."""
    return alerts.client_key(AlertKind.ANOMALY_DETECTED, client_id)


# --- Files new, changed, deleted ---------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    new: int
    changed: int
    deleted: int


def _walk(reader: IndexReader) -> Iterator[tuple[tuple[bytes, ...], int, tuple | None]]:
    """(path as its names, type, what a change moves) of every entry, in path order.

    Path order is the order of the tuples of names: a folder, then its contents, siblings by
    the bytes of their names, as each listing is written. The top level (the configured paths,
    a few) is sorted here. The stack holds one position per folder level, never a listing.
    """
    stack = [((), iter(sorted(reader.children(None), key=reader.name)))]
    while stack:
        prefix, numbers = stack[-1]
        number = next(numbers, None)
        if number is None:
            stack.pop()
            continue
        block, k = reader.locate(number)
        types, _, sizes, mtimes, links = block.columns
        path = (*prefix, block.names[k])
        if types[k] == DIRECTORY:
            yield path, types[k], None
            stack.append((path, iter(reader.children(number))))
        else:
            extra = block.extra
            yield path, types[k], (sizes[k], mtimes[k], extra[0][k] if extra else None, links.get(k))


def _differs(before: tuple | None, after: tuple | None) -> bool:
    if before is None or after is None:
        return before is not after  # a folder became a file, or the other way
    size, mtime, nsec, link = before
    size2, mtime2, nsec2, link2 = after
    if nsec is None or nsec2 is None:  # a format-1 file list has whole seconds only
        nsec = nsec2 = 0
    return (size, mtime, nsec, link) != (size2, mtime2, nsec2, link2)


def changes_between(previous: IndexReader, current: IndexReader) -> Changes:
    """Entries only in ``current`` (new), in both but different (changed), only in ``previous``."""
    if previous.kind in DATABASE_KINDS or current.kind in DATABASE_KINDS:
        return _object_changes(previous, current)
    new = changed = deleted = 0
    old_entries, new_entries = _walk(previous), _walk(current)
    a, b = next(old_entries, None), next(new_entries, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            deleted += 1
            a = next(old_entries, None)
        elif a is None or b[0] < a[0]:
            new += 1
            b = next(new_entries, None)
        else:
            if a[1] != b[1] or _differs(a[2], b[2]):
                changed += 1
            a, b = next(old_entries, None), next(new_entries, None)
    return Changes(new, changed, deleted)


def _object_changes(previous: IndexReader, current: IndexReader) -> Changes:
    """A database dump's tables (its table of contents: small), compared by rows and bytes."""

    def objects(reader: IndexReader) -> dict:
        raw = reader.meta.get("objects") if reader.kind in DATABASE_KINDS else None
        items = raw if isinstance(raw, list) else []
        return {
            (o.get("schema"), o.get("name"), o.get("type")): (o.get("rows"), o.get("bytes"))
            for o in items
            if isinstance(o, dict)
        }

    before, after = objects(previous), objects(current)
    changed = sum(1 for key in after.keys() & before.keys() if after[key] != before[key])
    return Changes(len(after.keys() - before.keys()), changed, len(before.keys() - after.keys()))


def _previous_point(backup: Backup) -> Backup | None:
    return (
        Backup.objects.filter(client_id=backup.client_id, taken_at__lte=backup.taken_at)
        .exclude(pk=backup.pk)
        .exclude(status=BackupStatus.DELETED)
        .filter(Q(taken_at__lt=backup.taken_at) | Q(pk__lt=backup.pk))
        .order_by("-taken_at", "-pk")
        .only("pk", "job_id", "index_entries")
        .first()
    )


def file_changes(backup: Backup) -> Changes | None:
    """What changed since the client's point before; None when either has no readable file list."""
    previous = _previous_point(backup)
    if previous is None or previous.index_entries is None or backup.index_entries is None:
        return None
    try:
        return changes_between(
            IndexReader(file_lists.index_file(previous.job_id), block_cache=MERGE_BLOCK_CACHE),
            IndexReader(file_lists.index_file(backup.job_id), block_cache=MERGE_BLOCK_CACHE),
        )
    except (OSError, IndexError_) as exc:
        log.warning("Anomaly check of backup %s: file lists not compared (%s)", backup.pk, exc)
        return None


# --- The verdict -------------------------------------------------------------------------------


def _point(backup: Backup, changes: Changes | None = None) -> anomaly.Point:
    if changes is None and backup.files_new is not None:
        changes = Changes(backup.files_new, backup.files_changed or 0, backup.files_deleted or 0)
    return anomaly.Point(
        backup_id=backup.pk,
        taken_at=timezone.localtime(backup.taken_at),
        level=backup.level,
        size_bytes=backup.size_bytes,
        entries=backup.index_entries,
        new=changes.new if changes else None,
        changed=changes.changed if changes else None,
        deleted=changes.deleted if changes else None,
        acknowledged=backup.anomaly_acknowledged_at is not None,
    )


_HISTORY_FIELDS = (
    "pk",
    "taken_at",
    "level",
    "size_bytes",
    "index_entries",
    "files_new",
    "files_changed",
    "files_deleted",
    "anomaly_acknowledged_at",
)


def history(backup: Backup) -> list[anomaly.Point]:
    """The client's points before ``backup`` that a verdict compares with, oldest first.

    The newest ``HISTORY_POINTS`` of any level and of the backup's own level (two indexed reads),
    within ``HISTORY_DAYS``; points found suspicious and not acknowledged are left out: an
    attack must not become the baseline of the next point.
    """
    earlier = (
        Backup.objects.filter(
            client_id=backup.client_id,
            taken_at__lt=backup.taken_at,
            taken_at__gte=backup.taken_at - timedelta(days=anomaly.HISTORY_DAYS),
        )
        .not_suspicious()
        .order_by("-taken_at", "-pk")
        .only(*_HISTORY_FIELDS)
    )
    rows = {b.pk: b for b in earlier[: anomaly.HISTORY_POINTS]}
    rows.update((b.pk, b) for b in earlier.filter(level=backup.level)[: anomaly.HISTORY_POINTS])
    return [_point(b) for b in sorted(rows.values(), key=lambda b: (b.taken_at, b.pk))]


def evaluate(backup_id: int, *, now: datetime | None = None) -> anomaly.Verdict | None:
    """Check one recovery point once; the verdict, or None when it was checked already or is gone.

    The figures are computed first, outside any transaction (two file lists read side by side
    may take seconds, and SQLite would hold every writer that long). Then one conditional
    UPDATE claims the point and stores them: of two workers, only the one whose UPDATE found
    ``anomaly_checked_at`` empty raises the alert, in the same transaction.
    """
    backup = Backup.objects.select_related("client__application", "job").filter(pk=backup_id).first()
    if backup is None or backup.anomaly_checked_at is not None:
        return None
    changes = file_changes(backup)
    point = _point(backup, changes)
    verdict = anomaly.judge(point, history(backup))
    evidence = verdict.evidence(point) if verdict.suspicious else {}
    with transaction.atomic():
        claimed = Backup.objects.filter(pk=backup_id, anomaly_checked_at__isnull=True).update(
            anomaly_checked_at=now or timezone.now(),
            files_new=changes.new if changes else None,
            files_changed=changes.changed if changes else None,
            files_deleted=changes.deleted if changes else None,
            anomaly=evidence,
        )
        if not claimed:
            return None
        if verdict.suspicious:
            _raise(backup, verdict)
    return verdict


def _raise(backup: Backup, verdict: anomaly.Verdict) -> None:
    alerts.raise_client_alert(
        AlertKind.ANOMALY_DETECTED,
        AlertSeverity.CRITICAL,
        backup.client,
        f"Backup {backup.pk} of {backup.client} is unlike its history (possible ransomware or mass "
        f"deletion): {'; '.join(f.summary for f in verdict.findings)}. Restore from a point before "
        "it, or acknowledge it as expected on the client's page.",
        job=backup.job,
    )


def check_missed(*, now: datetime | None = None, batch: int = CATCH_UP_BATCH) -> int:
    """Evaluate recent points nobody checked (a worker was down); returns how many were judged."""
    now = now or timezone.now()
    pending = list(
        Backup.objects.filter(
            anomaly_checked_at__isnull=True,
            status=BackupStatus.AVAILABLE,
            taken_at__gte=now - timedelta(days=CATCH_UP_DAYS),
        )
        .order_by("taken_at", "pk")
        .values_list("pk", flat=True)[:batch]
    )
    done = 0
    for backup_id in pending:  # oldest first: each point's history is judged before it
        try:
            done += evaluate(backup_id) is not None
        except Exception as exc:  # one point that cannot be judged must not hold up the others
            log.exception("Anomaly check of backup %s failed; marked checked with the error", backup_id)
            _mark_unjudgeable(backup_id, exc, now)
    return done


def _mark_unjudgeable(backup_id: int, exc: Exception, now: datetime) -> None:
    """A point whose check raises (an unreadable file list: zlib, struct, OSError) would raise at every
    run and, 200 of them, fill every batch: it is marked checked, with the error as its evidence (no
    ``rules``: not suspicious), and the safety net moves on."""
    error = f"{type(exc).__name__}: {exc}"[:500]
    Backup.objects.filter(pk=backup_id, anomaly_checked_at__isnull=True).update(
        anomaly_checked_at=now, anomaly={"version": 1, "error": f"not judged: {error}"}
    )


# --- Acknowledge, last known clean -------------------------------------------------------------


def acknowledge(backup: Backup, *, by, note: str, mfa: bool, now: datetime | None = None) -> bool:
    """The owner says the point is expected ("one-off import"): not suspicious any more, the client's
    alert resolved once none of its points is, and it counts in later baselines. False when it was
    not suspicious (or already acknowledged).

    Silencing a detection is a four-eyes decision like an approval: ``mfa`` is what the door saw
    (``identity.mfa.session_passed_mfa``); without it, when ``PORTAL_MFA_FOR_APPROVALS`` is on,
    ``MfaRequired`` is raised and nothing changes. The backup team is told in the client's anomaly
    alert: who acknowledged which point, and the note, are added to its message (kept once it is
    resolved). The caller decides who may (``visible_to``: the application's owners and the team).
    """
    note = (note or "").strip()
    if not note:
        raise ValidationError("Say why this backup is expected (e.g. 'one-off import of the archive').")
    if identity_mfa.required() and not mfa:
        raise identity_mfa.refusal("acknowledging an anomaly")
    note = note[:500]
    with transaction.atomic():
        done = (
            Backup.objects.filter(pk=backup.pk)
            .flagged()
            .update(
                anomaly_acknowledged_at=now or timezone.now(),
                anomaly_acknowledged_by=by,
                anomaly_acknowledged_note=note,
            )
        )
        if done:
            _tell_the_team(backup, by, note)
            if not Backup.objects.filter(client_id=backup.client_id).suspicious().exists():
                alerts.resolve_alerts(alert_key(backup.client_id))
    return bool(done)


def _tell_the_team(backup: Backup, by, note: str) -> None:
    """Add "Backup N acknowledged as expected by X: note" to the client's anomaly alert (the open one,
    else the newest): the team sees who silenced a detection and why, in the alert they were paged by."""
    alert = (
        Alert.objects.select_for_update()
        .filter(key=alert_key(backup.client_id))
        .order_by(F("resolved_at").desc(nulls_first=True), "-created_at")
        .first()
    )
    if alert is not None:
        alert.message = f"{alert.message}\nBackup {backup.pk} acknowledged as expected by {by}: {note}"
        alert.save(update_fields=["message"])


def last_known_clean(client: BackupClient | int) -> Backup | None:
    """The newest restorable, unsuspicious point taken before the client's newest suspicious point;
    None when nothing of the client is suspicious (or no clean point is left before it)."""
    client_id = client if isinstance(client, int) else client.pk
    newest = Backup.objects.filter(client_id=client_id).flagged().order_by("-taken_at", "-pk").first()
    if newest is None:
        return None
    return clean_before(client_id, newest)


def clean_before(client_id: int, point: Backup) -> Backup | None:
    """The newest restorable point of the client taken before ``point`` whose whole chain is clean.

    Restoring an incremental restores its full and every point between them: one of them suspicious
    (a full of encrypted files, an incremental clean because little changed since) makes it as bad.
    The chain's members are the ones ``restorable()`` asks about (same ``full``, taken no later).
    """
    tainted = Backup.objects.filter(
        Q(pk=OuterRef("full_id")) | Q(full_id=OuterRef("full_id"), taken_at__lt=OuterRef("taken_at"))
    ).flagged()
    return (
        Backup.objects.restorable()
        .filter(client_id=client_id, taken_at__lt=point.taken_at)
        .not_suspicious()
        .exclude(Q(full__isnull=False) & Exists(tainted))
        .order_by("-taken_at", "-pk")
        .first()
    )


@dataclass(frozen=True)
class RestoreWarning:
    """What the restore page says about a point chosen at or after a suspicious one."""

    flagged: Backup  # the chosen point itself, or the newest suspicious point before it
    clean: Backup | None  # the newest restorable, unsuspicious point before ``flagged``

    @property
    def evidence(self) -> list[str]:
        return list(self.flagged.anomaly.get("summaries", []))


def restore_warning(backup: Backup) -> RestoreWarning | None:
    """A warning when ``backup`` is suspicious or newer than a suspicious point of its client (two
    indexed reads at most); None otherwise."""
    flagged = (
        backup
        if backup.suspicious
        else Backup.objects.filter(client_id=backup.client_id, taken_at__lt=backup.taken_at)
        .flagged()
        .order_by("-taken_at", "-pk")
        .first()
    )
    if flagged is None:
        return None
    return RestoreWarning(flagged, clean_before(backup.client_id, flagged))
