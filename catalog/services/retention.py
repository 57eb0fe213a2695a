"""Retention: expired backups are removed from storage by their agent, then marked deleted.

    available ──expires_at passed, no legal hold──▶ expired ──expire job succeeded──▶ deleted

Nothing is deleted before it expires and nothing under legal hold is deleted
at all: the database refuses both (``backup_deleted_only_after_expiry``,
``backup_legal_hold_never_deleted``), whichever code tries.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from catalog.choices import BackupStatus, JobKind, JobState, JobTrigger
from catalog.errors import InvalidTransition
from catalog.models import Backup, Job
from catalog.services import jobs

BATCH = 500


def expire_due(*, now: datetime | None = None, batch: int = BATCH) -> int:
    """Mark backups past retention expired and queue their removal; returns how many were queued."""
    now = now or timezone.now()
    queued = 0
    while True:
        with transaction.atomic():
            due = list(
                Backup.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("client")
                .filter(status=BackupStatus.AVAILABLE, expires_at__lte=now, legal_hold=False)
                .order_by("expires_at")[:batch]
            )
            Backup.objects.filter(pk__in=[b.pk for b in due]).update(status=BackupStatus.EXPIRED)
            queued += _queue_removals(due, now)
        if len(due) < batch:
            break
    return queued + _requeue_stalled_removals(now)


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
        # A client whose agent is gone cannot remove its data; it stays expired for a person to see.
        for backup in backups
        if backup.client.agent_id is not None
    ]
    Job.objects.bulk_create(jobs)
    return len(jobs)


def _requeue_stalled_removals(now: datetime) -> int:
    """Expired backups whose removal failed (agent error, lease lost) get another expire job."""
    open_removals = Job.objects.filter(kind=JobKind.EXPIRE, state__in=JobState.open()).values("backup_id")
    stalled = list(
        Backup.objects.select_related("client")
        .filter(status=BackupStatus.EXPIRED, legal_hold=False)
        .exclude(pk__in=open_removals)[:BATCH]
    )
    return _queue_removals(stalled, now)


def hold(backup_id: int, *, by, reason: str) -> Backup:
    """Put a backup under legal hold: it is never expired; a removal not yet started is called off."""
    if not reason or not reason.strip():
        raise InvalidTransition("Say why the backup is held (case, ticket, request).")
    now = timezone.now()
    with transaction.atomic():
        backup = Backup.objects.select_for_update().get(pk=backup_id)
        if backup.status == BackupStatus.DELETED:
            raise InvalidTransition("This backup has already been deleted; there is nothing left to hold.")
        running = backup.jobs.filter(kind=JobKind.EXPIRE, state=JobState.RUNNING).exists()
        if running:
            raise InvalidTransition("The agent is removing this backup right now; it cannot be held.")
        for job_id in Job.objects.filter(
            backup=backup, kind=JobKind.EXPIRE, state=JobState.QUEUED
        ).values_list("pk", flat=True):
            jobs.cancel(job_id, now=now)
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

