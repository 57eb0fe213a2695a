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
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from catalog.choices import BackupStatus, JobKind, JobState, JobTrigger
from catalog.errors import InvalidTransition
from catalog.models import Backup, Job
from catalog.services import chains, jobs

BATCH = 500


def _needed() -> Q:
    """Points something still builds on: an available dependent, or an open backup job planned on it."""
    depended_on = Backup.objects.filter(base_id=OuterRef("pk"), status=BackupStatus.AVAILABLE)
    planned_on = Job.objects.filter(base_id=OuterRef("pk"), state__in=JobState.open())
    return Q(Exists(depended_on)) | Q(Exists(planned_on))


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
        .order_by("expires_at")[:batch]
    )
    if due:
        # Asked again, now that the rows are locked: on PostgreSQL the read above saw the work of
        # others as of its start, and a claim planning on one of these points (it locks the point)
        # or a report recording an incremental on it may have committed since. A fresh read sees
        # them; the locks now held make any later one wait for this sweep, then plan a full.
        needed = set(
            Backup.objects.filter(pk__in=[backup.pk for backup in due])
            .filter(_needed())
            .values_list("pk", flat=True)
        )
        due = [backup for backup in due if backup.pk not in needed]
    Backup.objects.filter(pk__in=[backup.pk for backup in due]).update(status=BackupStatus.EXPIRED)
    return due


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
        if backup.client.agent_id is not None and backup.client.agent.revoked_at is None
    ]
    Job.objects.bulk_create(jobs)
    return len(jobs)


def _requeue_stalled_removals(now: datetime) -> int:
    """Expired backups whose removal failed (agent error, lease lost) get another expire job."""
    open_removals = Job.objects.filter(kind=JobKind.EXPIRE, state__in=JobState.open()).values("backup_id")
    stalled = list(
        Backup.objects.select_related("client__agent")
        .filter(status=BackupStatus.EXPIRED, legal_hold=False)
        .exclude(pk__in=open_removals)[:BATCH]
    )
    return _queue_removals(stalled, now)


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

