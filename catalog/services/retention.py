"""Retention: expired backups are removed from storage by their agent, then marked deleted.

    available ──expires_at passed, no legal hold──▶ expired ──expire job succeeded──▶ deleted

Nothing is deleted before it expires and nothing under legal hold is deleted
at all: the database refuses both (``backup_deleted_only_after_expiry``,
``backup_legal_hold_never_deleted``), whichever code tries.

Chains (docs/incremental.md): a point another available point builds on stays available
until that dependent goes, and so does the base an open backup job builds on; the
database refuses the opposite too (the triggers of migration 0013). A sweep therefore
expires leaves first, pass after pass: a chain whose last dependent is due goes whole,
in one sweep. A legal hold on a point holds its chain the same way.

Under suspicion (docs/anomalies.md): while a client has a stored point the anomaly check found
unusual and nobody acknowledged, none of its points taken before that one expires: they may be
the last clean copies. Acknowledging the point lets retention go on at the next sweep.

A client whose agent was revoked (its host retired) gets no expire job: its expired points stay
on storage, and one alert per client tells the backup team to remove them by hand.
"""

from __future__ import annotations

import posixpath
from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from catalog.choices import AlertKind, AlertSeverity, BackupStatus, JobKind, JobState, JobTrigger
from catalog.errors import InvalidTransition
from catalog.models import Alert, Backup, BackupClient, Job
from catalog.services import alerts, chains, jobs

BATCH = 500


def _needed() -> Q:
    """Points something still builds on: an available dependent, or an open backup job planned on it."""
    depended_on = Backup.objects.filter(base_id=OuterRef("pk"), status=BackupStatus.AVAILABLE)
    planned_on = Job.objects.filter(base_id=OuterRef("pk"), state__in=JobState.open())
    return Q(Exists(depended_on)) | Q(Exists(planned_on))


def _under_suspicion() -> Q:
    """Points of a client with a suspicious stored point (unacknowledged) taken after them: they may be
    the last clean copies, and wait until someone acknowledges it (docs/anomalies.md)."""
    later_suspicious = Backup.objects.filter(
        client_id=OuterRef("client_id"), taken_at__gt=OuterRef("taken_at")
    ).suspicious()
    return Q(Exists(later_suspicious))


def expire_due(*, now: datetime | None = None, batch: int = BATCH) -> int:
    """Mark backups past retention expired and queue their removal; returns how many were queued.

    Each pass expires the due points nothing builds on (leaves); their bases, due too, become
    leaves for the next pass. Passes go on while one may have freed a base or filled its batch.
    """
    now = now or timezone.now()
    queued = 0
    while True:
        with transaction.atomic():
            due = _expire_leaves(now, batch)
        # Queued once the expiry is committed: the sweep then holds no point's lock while the
        # jobs' foreign keys wait for their clients' rows, which a completing backup holds while
        # it waits for its base (a deadlock on PostgreSQL otherwise). A removal never queued is
        # queued by ``_requeue_stalled_removals``, below and at every sweep.
        with transaction.atomic():
            queued += _queue_removals(due, now)
        if len(due) < batch and not any(backup.base_id for backup in due):
            break
    return queued + _requeue_stalled_removals(now)


def _expire_leaves(now: datetime, batch: int) -> list[Backup]:
    """Expire up to ``batch`` due points that nothing builds on, locked; the points expired."""
    due = list(
        Backup.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("client__agent")
        .filter(status=BackupStatus.AVAILABLE, expires_at__lte=now, legal_hold=False)
        .exclude(_needed())
        .exclude(_under_suspicion())
        .order_by("expires_at")[:batch]
    )
    if due:
        # Asked again, now that the rows are locked: on PostgreSQL the read above saw the work of
        # others as of its start, and a claim planning on one of these points (it locks the point)
        # or a report recording an incremental on it may have committed since. A fresh read sees
        # them; the locks now held make any later one wait for this sweep, then plan a full. So for
        # a suspicious point recorded (or an acknowledgement withdrawn) since.
        needed = set(
            Backup.objects.filter(pk__in=[backup.pk for backup in due])
            .filter(_needed() | _under_suspicion())
            .values_list("pk", flat=True)
        )
        due = [backup for backup in due if backup.pk not in needed]
    Backup.objects.filter(pk__in=[backup.pk for backup in due]).update(status=BackupStatus.EXPIRED)
    return due


def _removable(backup: Backup) -> bool:
    """Whether an agent can remove the point: its client's agent exists and is not revoked."""
    return backup.client.agent_id is not None and backup.client.agent.revoked_at is None


def _queue_removals(backups: list[Backup], now: datetime) -> int:
    jobs = [
        Job(
            kind=JobKind.EXPIRE,
            client_id=backup.client_id,
            agent_id=backup.client.agent_id,
            backup=backup,
            trigger=JobTrigger.SYSTEM,
            created_at=now,
            not_before=now,
        )
        # A client whose agent is gone or revoked (its host retired) cannot remove its data: it
        # stays expired for a person to see, instead of a job no agent will ever claim.
        for backup in backups
        if _removable(backup)
    ]
    Job.objects.bulk_create(jobs)
    return len(jobs)


def unremovable_key(client_id: int) -> str:
    """One alert per client whose expired points nobody can remove (raised once: nothing resolves it)."""
    return alerts.client_key(AlertKind.EXPIRED_NOT_REMOVED, client_id)


def _alert_unremovable() -> None:
    """Expired points of clients whose agent was revoked (the host retired): no agent will remove them.
    One alert per client, naming how many, where, and what to do (docs/agent.md, Decommissioning).
    The key makes it one per client, open or resolved.
    """
    expired = Backup.objects.filter(client_id=OuterRef("pk"), status=BackupStatus.EXPIRED)
    clients = {
        client.pk: client
        for client in BackupClient.objects.filter(agent__revoked_at__isnull=False)
        .filter(Exists(expired))
        .select_related("application")  # str(client) names it in the message
    }
    if not clients:
        return
    keys = {client_id: unremovable_key(client_id) for client_id in clients}
    alerted = set(Alert.objects.filter(key__in=keys.values()).values_list("key", flat=True))
    pending = [client_id for client_id in clients if keys[client_id] not in alerted]
    # Every pending client's expired points in one query, grouped here by client.
    points_of: dict[int, list[Backup]] = {}
    for point in (
        Backup.objects.filter(client_id__in=pending, status=BackupStatus.EXPIRED)
        .select_related("storage_target")
        .only("client_id", "location", "storage_target__name", "storage_target__location")
    ):
        points_of.setdefault(point.client_id, []).append(point)
    for client_id in pending:
        client, points = clients[client_id], points_of.get(client_id)
        if not points:
            continue
        by_target: dict = {}
        for point in points:
            by_target.setdefault(point.storage_target, []).append(point.location)
        where = " and ".join(
            f"{target.name} at {posixpath.join(target.location, _folder(locations))}"
            for target, locations in sorted(by_target.items(), key=lambda item: item[0].name)
        )
        alerts.raise_alert(
            kind=AlertKind.EXPIRED_NOT_REMOVED,
            severity=AlertSeverity.WARNING,
            key=keys[client_id],
            message=(
                f"{len(points)} expired recovery points of {client} remain on {where}; its agent was "
                "revoked when the host was retired: remove them by hand (docs/agent.md, "
                "Decommissioning) or re-enrol the host"
            ),
            application_id=client.application_id,
            client_id=client_id,
            agent_id=client.agent_id,
        )


def _requeue_stalled_removals(now: datetime) -> int:
    """Expired backups whose removal failed (agent error, lease lost) get another expire job."""
    open_removals = Job.objects.filter(kind=JobKind.EXPIRE, state__in=JobState.open()).values("backup_id")
    stalled = list(
        Backup.objects.select_related("client__agent")
        .filter(status=BackupStatus.EXPIRED, legal_hold=False, client__agent__revoked_at__isnull=True)
        .exclude(pk__in=open_removals)[:BATCH]
    )
    _alert_unremovable()
    return _queue_removals(stalled, now)


def _folder(locations: list[str]) -> str:
    """The folder holding every one of ``locations`` (paths relative to the target's root)."""
    return posixpath.commonpath(locations) if len(locations) > 1 else posixpath.dirname(locations[0])


def hold(backup_id: int, *, by, reason: str) -> Backup:
    """Put a backup under legal hold: it is never expired; a removal not yet started is called off.

    An incremental needs its chain: its bases stay available while it does (retention and the
    database see to it), and holding an expired incremental brings its expired bases back with
    it, their removals called off. Refused if a member of the chain is already deleted or being
    removed right now: what is left could not be restored.
    """
    if not reason or not reason.strip():
        raise InvalidTransition("Say why the backup is held (case, ticket, request).")
    now = timezone.now()
    with transaction.atomic():
        backup = Backup.objects.select_for_update().get(pk=backup_id)
        if backup.status == BackupStatus.DELETED:
            raise InvalidTransition("This backup has already been deleted; there is nothing left to hold.")
        bases = chains.chain_of(backup, lock=True)
        for base in bases:
            if base.status == BackupStatus.DELETED:
                raise InvalidTransition(
                    f"Backup {base.pk}, in the chain this incremental builds on, has already been deleted: "
                    "the point cannot be restored any more, so there is nothing whole to hold."
                )
        members = [*bases, backup]
        removing = (
            Job.objects.filter(backup__in=members, kind=JobKind.EXPIRE, state=JobState.RUNNING)
            .order_by("pk")
            .values_list("backup_id", flat=True)
            .first()
        )
        if removing == backup.pk:
            raise InvalidTransition("The agent is removing this backup right now; it cannot be held.")
        if removing is not None:
            raise InvalidTransition(
                f"The agent is removing backup {removing}, in the chain this incremental builds on, right "
                "now; it cannot be held."
            )
        for job_id in Job.objects.filter(
            backup__in=members, kind=JobKind.EXPIRE, state=JobState.QUEUED
        ).values_list("pk", flat=True):
            jobs.cancel(job_id, now=now)
        # Oldest first: a point may become available only once its base is (the database checks).
        for base in bases:
            if base.status != BackupStatus.AVAILABLE:
                Backup.objects.filter(pk=base.pk).update(status=BackupStatus.AVAILABLE)
        backup.legal_hold, backup.legal_hold_reason = True, reason.strip()
        backup.legal_hold_by, backup.legal_hold_at = by, now
        backup.status = BackupStatus.AVAILABLE  # an expired one comes back until the hold is lifted
        backup.save(
            update_fields=["legal_hold", "legal_hold_reason", "legal_hold_by", "legal_hold_at", "status"]
        )
    return backup


def release(backup_id: int, *, by) -> Backup:
    """Lift a legal hold; retention applies again from the next sweep."""
    with transaction.atomic():
        backup = Backup.objects.select_for_update().get(pk=backup_id)
        backup.legal_hold, backup.legal_hold_reason = False, ""
        backup.legal_hold_by, backup.legal_hold_at = by, timezone.now()
        backup.save(update_fields=["legal_hold", "legal_hold_reason", "legal_hold_by", "legal_hold_at"])
    return backup

