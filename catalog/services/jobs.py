"""The job lifecycle: every Job state transition happens here and nowhere else.

    queued ──claim──▶ running ──complete──▶ succeeded
       │                 │ └──fail / lease expired──▶ failed ──▶ (retry: a new queued job)
       └──cancel──▶ cancelled ◀──agent stops──┘

Claims, progress and completion lock the job row, so two agents polling, a
duplicated report or the lease reaper racing a late report cannot both win.
On SQLite, ``select_for_update`` is a no-op, but every transaction is
``BEGIN IMMEDIATE`` (see settings), which serialises writers: the same
guarantee by a coarser lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.choices import (
    AlertKind,
    AlertSeverity,
    BackupStatus,
    ClientStatus,
    Compression,
    ErrorClass,
    JobKind,
    JobState,
    JobTrigger,
    Verification,
)
from catalog.errors import InvalidTransition, LeaseLost
from catalog.failures import AGENT_ERROR_CLASSES, classify
from catalog.models import Agent, Backup, BackupClient, Job
from catalog.services import alerts
from catalog.signals import job_changed

log = logging.getLogger(__name__)

LOG_TAIL_LIMIT = 16_000
CLAIM_BATCH = 10


@dataclass(frozen=True)
class BackupReport:
    """What an agent tells us about a finished backup."""

    size: int
    stored_size: int
    location: str
    sha256: str
    compression: str = Compression.NONE
    manifest: dict | None = None


def _announce(job: Job, previous_state: str) -> None:
    job_id, state = job.pk, job.state
    transaction.on_commit(
        lambda: job_changed.send(sender=Job, job_id=job_id, previous_state=previous_state, state=state)
    )


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.PORTAL_JOB_LEASE_SECONDS)


# --- Creating jobs -------------------------------------------------------------


def backup_destination(job: Job) -> str:
    """Where the agent writes ``job``'s backup, relative to the storage root: the one rule.

    The portal hands it out in the job (``job_payload``) and accepts a successful
    backup only at exactly this location, so an agent cannot file a backup under
    another client's or application's folder.
    """
    return f"{job.client.application.slug}/{job.client.name}/job-{job.pk}"


def open_backup_of(client_id: int) -> Job | None:
    """The client's queued or running backup, if any; ``job_one_open_backup_per_client`` allows one."""
    return (
        Job.objects.filter(client_id=client_id, kind=JobKind.BACKUP, state__in=JobState.open())
        .order_by("pk")
        .first()
    )


def queue_backup(
    client: BackupClient, *, trigger: str = JobTrigger.USER, requested_by=None, now: datetime | None = None
) -> Job:
    """Queue a backup of ``client`` now, or return the one already queued or running (see below)."""
    job, _ = get_or_queue_backup(client, trigger=trigger, requested_by=requested_by, now=now)
    return job


def get_or_queue_backup(
    client: BackupClient, *, trigger: str = JobTrigger.USER, requested_by=None, now: datetime | None = None
) -> tuple[Job, bool]:
    """A backup of ``client`` now (backup now, or a person's request): ``(job, created)``.

    A client has at most one open backup (``job_one_open_backup_per_client``):
    when one is already queued or running, that job is the answer and
    ``created`` is False. A queued one waiting out a retry's backoff is moved
    up to now, since somebody asked for a backup now.

    The client's row is locked first, so two requests at once (and the
    scheduler, which skips locked clients) take turns: the second finds the
    first one's job. Should another writer slip a job in all the same, the
    constraint refuses the insert, in a savepoint, and the open job is returned.
    """
    now = now or timezone.now()
    with transaction.atomic():
        client = (
            BackupClient.objects.select_for_update(of=("self",))
            .select_related("application")
            .get(pk=client.pk)
        )
        if client.agent_id is None:
            raise InvalidTransition(f"{client} has no enrolled agent yet; it cannot be backed up.")
        if client.status != ClientStatus.ACTIVE:
            status = client.get_status_display().lower()
            raise InvalidTransition(f"{client} is {status}; it is not backed up.")
        existing = open_backup_of(client.pk)
        if existing is None:
            try:
                with transaction.atomic():  # a savepoint: the outer transaction survives a refused insert
                    job = Job.objects.create(
                        kind=JobKind.BACKUP,
                        client=client,
                        agent_id=client.agent_id,
                        trigger=trigger,
                        requested_by=requested_by,
                        created_at=now,
                        not_before=now,
                    )
            except IntegrityError:
                existing = open_backup_of(client.pk)
                if existing is None:
                    raise  # another constraint: not ours to hide
            else:
                _announce(job, "")
                return job, True
        if existing.state == JobState.QUEUED and existing.not_before > now:
            Job.objects.filter(pk=existing.pk, state=JobState.QUEUED).update(not_before=now)
            existing.not_before = now
    return existing, False


def queue_restore(
    backup: Backup,
    *,
    agent: Agent,
    target_location: str,
    overwrite: bool,
    trigger: str = JobTrigger.REQUEST,
    requested_by=None,
) -> Job:
    """Queue a restore of ``backup`` on ``agent``. Who may ask for it is decided by the caller."""
    if backup.status != BackupStatus.AVAILABLE:
        raise InvalidTransition(f"Backup {backup.pk} is {backup.get_status_display().lower()}.")
    with transaction.atomic():
        job = Job.objects.create(
            kind=JobKind.RESTORE,
            client_id=backup.client_id,
            agent=agent,
            backup=backup,
            trigger=trigger,
            target_location=target_location,
            overwrite=overwrite,
            requested_by=requested_by,
        )
        _announce(job, "")
    return job


# --- Agent side: claim, progress, complete ----------------------------------------


def claim(agent: Agent, *, now: datetime | None = None, limit: int = CLAIM_BATCH) -> list[Job]:
    """Hand ``agent`` its queued jobs, each exactly once, with a lease."""
    now = now or timezone.now()
    with transaction.atomic():
        # SKIP LOCKED: a second poll of the same agent (two processes, a retry
        # after a timeout) takes other jobs or none, never the same ones.
        candidates = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(agent=agent, state=JobState.QUEUED, not_before__lte=now)
            .order_by("not_before", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not candidates:
            return []
        lease = _lease_until(now)
        Job.objects.filter(pk__in=candidates, state=JobState.QUEUED).update(
            state=JobState.RUNNING, started_at=now, lease_expires_at=lease
        )
        jobs = list(
            Job.objects.filter(pk__in=candidates)
            .select_related(
                "client__application",
                "client__policy__storage_target",
                "backup__storage_target",
            )
            .order_by("not_before", "pk")
        )
        for job in jobs:
            _announce(job, JobState.QUEUED)
    return jobs


def _locked_job_of(agent: Agent, job_id: int) -> Job:
    """The agent's own job, locked; another agent's job does not exist for it."""
    return Job.objects.select_for_update().select_related("client__policy").get(pk=job_id, agent=agent)


def record_progress(
    agent: Agent, job_id: int, *, bytes_done: int, bytes_total: int | None, now: datetime | None = None
) -> Job:
    """Note progress and extend the lease. Raises Job.DoesNotExist (→ 404) or LeaseLost (→ 409)."""
    now = now or timezone.now()
    with transaction.atomic():
        job = _locked_job_of(agent, job_id)
        if job.state == JobState.CANCELLED or job.cancel_requested_at:
            return job  # the caller answers "cancel": the agent stops
        if job.state != JobState.RUNNING:
            raise LeaseLost(f"Job {job.pk} is {job.state}, not running.")
        job.bytes_done = bytes_done
        job.bytes_total = bytes_total
        job.lease_expires_at = _lease_until(now)
        job.save(update_fields=["bytes_done", "bytes_total", "lease_expires_at"])
    return job


def complete_success(
    agent: Agent,
    job_id: int,
    *,
    report: BackupReport | None,
    log_tail: str = "",
    finished_at: datetime | None = None,
) -> tuple[Job, Backup | None]:
    """Close a job the agent finished. A repeated report returns what the first one made."""
    finished_at = finished_at or timezone.now()
    with transaction.atomic():
        job = _locked_job_of(agent, job_id)
        if job.state == JobState.SUCCEEDED:
            return job, Backup.objects.filter(job=job).first()  # the same report again
        _check_reportable(job)
        previous = job.state
        job.state = JobState.SUCCEEDED
        job.finished_at = finished_at
        job.lease_expires_at = None
        job.log_tail = log_tail[-LOG_TAIL_LIMIT:]
        backup = None
        if job.kind == JobKind.BACKUP:
            if report is None:
                raise ValueError("A successful backup must report size, location and checksum.")
            job.bytes_done = report.stored_size
            job.bytes_total = report.stored_size
            backup = _record_backup(job, report)
        job.save(
            update_fields=[
                "state",
                "finished_at",
                "lease_expires_at",
                "log_tail",
                "bytes_done",
                "bytes_total",
            ]
        )
        _AFTER_SUCCESS.get(job.kind, lambda job: None)(job)
        _announce(job, previous)
    return job, backup


def complete_failure(
    agent: Agent,
    job_id: int,
    *,
    error: str,
    log_tail: str = "",
    error_class: str = "",
    finished_at: datetime | None = None,
) -> Job:
    """Close a job the agent could not finish; a backup is retried per its policy.

    ``error_class`` is the agent's own code (protocol 2), trusted when this portal
    knows it; without one (protocol 1, or a code from a newer agent) the error
    text is classified (``catalog.failures.classify``).
    """
    if error_class not in AGENT_ERROR_CLASSES:
        error_class = ""
    with transaction.atomic():
        job = _locked_job_of(agent, job_id)
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            return job  # the same report again
        _check_reportable(job)
        _fail(job, error=error, log_tail=log_tail, error_class=error_class, now=finished_at or timezone.now())
    return job


def _backup_succeeded(job: Job) -> None:
    alerts.resolve_alerts(alerts.client_key(AlertKind.JOB_FAILED, job.client_id))
    alerts.resolve_alerts(alerts.client_key(AlertKind.RPO_BREACHED, job.client_id))


def _restore_test_succeeded(job: Job) -> None:
    Backup.objects.filter(pk=job.backup_id).update(
        verified_at=job.finished_at, verification=Verification.PASSED, verification_job=job
    )
    alerts.resolve_alerts(alerts.client_key(AlertKind.RESTORE_TEST_FAILED, job.client_id))
    alerts.resolve_alerts(alerts.client_key(AlertKind.RESTORE_TEST_OVERDUE, job.client_id))


def _expire_succeeded(job: Job) -> None:
    # The agent removed the data; the constraints refuse it anyway if the backup had not expired.
    Backup.objects.filter(pk=job.backup_id, status=BackupStatus.EXPIRED, legal_hold=False).update(
        status=BackupStatus.DELETED, deleted_at=job.finished_at
    )


def _restore_test_failed(job: Job) -> None:
    if job.error_class == ErrorClass.LEASE_EXPIRED:
        return  # the agent went away: no verdict on the backup; tomorrow's run tries again
    Backup.objects.filter(pk=job.backup_id).update(
        verified_at=job.finished_at, verification=Verification.FAILED, verification_job=job
    )
    alerts.raise_client_alert(
        AlertKind.RESTORE_TEST_FAILED,
        AlertSeverity.CRITICAL,
        job.client,
        f"Restore test of {job.client} (backup {job.backup_id}) failed "
        f"({job.get_error_class_display().lower()}): {job.error_message[:300]}",
        job=job,
    )


_AFTER_SUCCESS = {
    JobKind.BACKUP: _backup_succeeded,
    JobKind.RESTORE_TEST: _restore_test_succeeded,
    JobKind.EXPIRE: _expire_succeeded,
}


def _check_reportable(job: Job) -> None:
    if job.state != JobState.RUNNING:
        # Queued (never handed out) or already closed the other way: the lease
        # expired and the work moved on to a retry. The agent drops the report.
        raise LeaseLost(f"Job {job.pk} is {job.state}; this report is no longer expected.")


def _record_backup(job: Job, report: BackupReport) -> Backup:
    policy = job.client.policy
    taken_at = job.started_at or timezone.now()
    return Backup.objects.create(
        client_id=job.client_id,
        job=job,
        storage_target_id=policy.storage_target_id,
        taken_at=taken_at,
        expires_at=taken_at + timedelta(days=policy.retention_days),
        size_bytes=report.size,
        stored_size_bytes=report.stored_size,
        location=report.location,
        sha256=report.sha256,
        compression=report.compression,
        manifest=report.manifest or {},
    )


# --- Failure, retry, lease expiry, cancel -----------------------------------------------


def _fail(job: Job, *, error: str, log_tail: str, now: datetime, error_class: str = "") -> None:
    """Mark a locked running job failed, then retry or alert."""
    previous = job.state
    cancelled = bool(job.cancel_requested_at)
    job.state = JobState.CANCELLED if cancelled else JobState.FAILED
    job.finished_at = now
    job.lease_expires_at = None
    job.error_message = error
    job.log_tail = log_tail[-LOG_TAIL_LIMIT:]
    job.error_class = "" if cancelled else (error_class or classify(error, log_tail))
    job.save(
        update_fields=["state", "finished_at", "lease_expires_at", "error_message", "log_tail", "error_class"]
    )
    _announce(job, previous)
    if cancelled:
        return
    if job.kind == JobKind.BACKUP:
        _retry_or_alert(job, now)
    elif job.kind == JobKind.RESTORE_TEST:
        _restore_test_failed(job)


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff: base, 2×base, 4×base… after attempts 1, 2, 3…"""
    return timedelta(seconds=settings.PORTAL_RETRY_BASE_SECONDS * 2 ** (attempt - 1))


# Failures a retry cannot mend: the agent's allow-list is changed on the server, by its
# administrator, and an invalid job (options, target or storage) by whoever configured
# it, not by trying again. One alert says who must do what.
NOT_RETRIED = frozenset({ErrorClass.REFUSED_BY_AGENT, ErrorClass.INVALID_JOB})


def _retry_or_alert(job: Job, now: datetime) -> Job | None:
    policy = job.client.policy
    if job.attempt <= policy.max_retries and job.error_class not in NOT_RETRIED:
        # The failed job is closed (saved above), so the client has no open backup and the
        # retry fits ``job_one_open_backup_per_client``. Should a backup have been queued
        # meanwhile all the same, that one is the retry: the failure is kept either way.
        try:
            with transaction.atomic():
                retry = Job.objects.create(
                    kind=job.kind,
                    client_id=job.client_id,
                    agent_id=job.agent_id,
                    trigger=JobTrigger.RETRY,
                    attempt=job.attempt + 1,
                    retry_of=job,
                    not_before=now + retry_delay(job.attempt),
                )
        except IntegrityError:
            existing = open_backup_of(job.client_id)
            if existing is None:
                raise
            return existing
        _announce(retry, "")
        return retry
    alerts.raise_client_alert(
        AlertKind.JOB_FAILED, AlertSeverity.CRITICAL, job.client, _failure_message(job), job=job
    )
    return None


def _failure_message(job: Job) -> str:
    if job.error_class == ErrorClass.INVALID_JOB:
        return (
            f"Backup of {job.client} cannot run as configured (invalid job); not retried until its "
            f"options, storage or agent change: {job.error_message[:400]}"
        )
    if job.error_class == ErrorClass.REFUSED_BY_AGENT:
        return (
            f"Backup of {job.client} was refused by the agent on {job.agent}; not retried until "
            f"the server's administrator allows it: {job.error_message[:400]}"
        )
    return (
        f"Backup of {job.client} failed {job.attempt} times in a row "
        f"({job.get_error_class_display().lower()}): {job.error_message[:300]}"
    )


def reap_expired_leases(*, now: datetime | None = None, batch: int = 500) -> int:
    """Fail running jobs whose agent stopped reporting; they are retried like any failure."""
    now = now or timezone.now()
    reaped = 0
    while True:
        with transaction.atomic():
            jobs = list(
                Job.objects.select_for_update(skip_locked=True)
                .select_related("client__policy", "client")
                .filter(state=JobState.RUNNING, lease_expires_at__lt=now)
                .order_by("lease_expires_at")[:batch]
            )
            for job in jobs:
                _fail(
                    job,
                    error="The agent stopped reporting progress before the job finished.",
                    log_tail=job.log_tail,
                    now=now,
                    error_class=ErrorClass.LEASE_EXPIRED,
                )
        reaped += len(jobs)
        if len(jobs) < batch:
            return reaped


def cancel(job_id: int, *, now: datetime | None = None) -> Job:
    """Cancel a queued job at once; ask the agent to stop a running one."""
    now = now or timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.state == JobState.QUEUED:
            previous = job.state
            job.state = JobState.CANCELLED
            job.finished_at = now
            job.save(update_fields=["state", "finished_at"])
            _announce(job, previous)
        elif job.state == JobState.RUNNING:
            job.cancel_requested_at = now
            job.save(update_fields=["cancel_requested_at"])
        else:
            raise InvalidTransition(f"Job {job.pk} is already {job.get_state_display().lower()}.")
    return job
