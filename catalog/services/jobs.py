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
from django.db.models import Case, Value, When
from django.utils import timezone

from catalog.choices import (
    AlertKind,
    AlertSeverity,
    BackupLevel,
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
from catalog.models import Agent, Backup, BackupClient, Job, OpenJob
from catalog.services import alerts, chains, file_lists
from catalog.signals import job_changed
from core.queue import enqueue

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
    #: The file list the agent says it uploaded (protocol 3): format, kind, entries, size, sha256.
    index: dict | None = None
    #: What the agent took (protocol 4): a full, or an incremental on ``base`` (the job's planned base).
    level: str = BackupLevel.FULL
    base: int | None = None


def _announce(job: Job, previous_state: str) -> None:
    job_id, state = job.pk, job.state
    transaction.on_commit(
        lambda: job_changed.send(sender=Job, job_id=job_id, previous_state=previous_state, state=state)
    )


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.PORTAL_JOB_LEASE_SECONDS)


def progress_interval() -> int:
    """How often a running job's agent should report progress: a quarter of the lease (30 s by default).

    Told to the agent in each progress answer (``report_after``). Four reports
    per lease survive a lost one or two; reporting more often only adds
    requests, which at fleet scale outnumber everything else a job sends (an
    hour-long backup at 5 s was 720 reports; at 30 s it is 120). The price: a
    cancel reaches the agent at its next report, up to this long later.
    """
    return max(1, settings.PORTAL_JOB_LEASE_SECONDS // 4)


# --- Creating jobs -------------------------------------------------------------


def backup_destination(job: Job) -> str:
    """Where the agent writes ``job``'s backup, relative to the storage root: the one rule.

    The portal hands it out in the job (``job_payload``) and accepts a successful
    backup only at exactly this location, so an agent cannot file a backup under
    another client's or application's folder.
    """
    return f"{job.client.application.slug}/{job.client.name}/job-{job.pk}"


def _create_backup_job(*, client_id: int, **fields) -> tuple[Job, bool]:
    """Insert a backup job, or find the open one ``job_one_open_backup_per_client`` kept instead."""
    try:
        with transaction.atomic():  # a savepoint: the outer transaction survives a refused insert
            return Job.objects.create(kind=JobKind.BACKUP, client_id=client_id, **fields), True
    except IntegrityError:
        existing = open_backup_of(client_id)
        if existing is None:
            raise  # another constraint: not ours to hide
        return existing, False


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
            job, created = _create_backup_job(
                client_id=client.pk,
                agent_id=client.agent_id,
                trigger=trigger,
                requested_by=requested_by,
                created_at=now,
                not_before=now,
            )
            if created:
                _announce(job, "")
                return job, True
            existing = job
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
    paths: list[str] | None = None,
) -> Job:
    """Queue a restore of ``backup`` on ``agent``. Who may ask for it is decided by the caller.

    ``paths``: a selective restore's files, folders or tables, already checked against the
    backup's file list (``file_lists.check_selection``); empty or None restores everything.
    """
    if backup.status != BackupStatus.AVAILABLE:
        raise InvalidTransition(f"Backup {backup.pk} is {backup.get_status_display().lower()}.")
    if refusal := chains.restore_refusal(backup, agent):
        raise InvalidTransition(refusal)
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
            paths=list(paths or []),
        )
        _announce(job, "")
    return job


# --- Agent side: claim, progress, complete ----------------------------------------


def claim(
    agent: Agent,
    *,
    now: datetime | None = None,
    limit: int = CLAIM_BATCH,
    seen: list[OpenJob] | None = None,
) -> list[Job]:
    """Hand ``agent`` its queued jobs, each exactly once, with a lease.

    With ``seen`` (``agent.open_jobs``, read with the agent by this poll), nothing happens
    unless it shows a queued job due by ``now``: a job queued after that read is handed out
    at the next poll. Otherwise the locked read below decides, as always.

    Each backup's level is planned here (``chains.plan_level``): a full, written with the
    claim itself, unless its policy takes incrementals; then a read of the client's newest
    point (locked) and one more write for the jobs whose plan differs.
    """
    now = now or timezone.now()
    if seen is not None and not any(job.state == JobState.QUEUED and job.not_before <= now for job in seen):
        return []
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
            state=JobState.RUNNING,
            started_at=now,
            lease_expires_at=lease,
            level=Case(When(kind=JobKind.BACKUP, then=Value(BackupLevel.FULL)), default=Value("")),
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
        if planned := chains.plan_claimed(jobs, agent, now=now):
            Job.objects.bulk_update(planned, ["level", "base", "level_reason"])
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
    reported_started_at: datetime | None = None,
    reported_finished_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[Job, Backup | None]:
    """Close a job the agent finished. A repeated report returns what the first one made.

    Times are the portal's: ``finished_at`` is when the report arrived; the agent's own
    times are kept in ``reported_*`` as information only (its clock may be hours off).

    A finished backup is never thrown away by timing: a success report for a backup
    whose lease ran out (failed ``lease_expired``) is accepted while its retry, if
    any, is still queued; the retry is cancelled (see ``_accept_late``).
    """
    now = now or timezone.now()
    with transaction.atomic():
        job = _locked_job_of(agent, job_id)
        if job.state == JobState.SUCCEEDED:
            backup = Backup.objects.filter(job=job).first()  # the same report again
            late_index = backup is not None and backup.index_entries is None and report and report.index
            # Its file list arrived after the first report: attach it now.
            if late_index and _attach_index(job, backup, report.index):
                backup.save(update_fields=_INDEX_FIELDS)
            return job, backup
        previous = job.state
        late_note = ""
        if job.state == JobState.FAILED and _late_acceptable(job, report):
            late_note = _accept_late(job, now)
        else:
            _check_reportable(job)
        job.state = JobState.SUCCEEDED
        job.finished_at = now
        job.reported_started_at = reported_started_at
        job.reported_finished_at = reported_finished_at
        job.lease_expires_at = None
        job.log_tail = (log_tail + late_note)[-LOG_TAIL_LIMIT:]
        if late_note:
            job.error_class, job.error_message = "", ""
        backup = None
        if job.kind == JobKind.BACKUP:
            if report is None:
                raise ValueError("A successful backup must report size, location and checksum.")
            job.bytes_done = report.stored_size
            job.bytes_total = report.stored_size
            backup, note = _record_backup(job, report)
            job.log_tail = (job.log_tail + note)[-LOG_TAIL_LIMIT:]
            # Unlike its history (ransomware, mass deletion)? Checked on a worker once this commits.
            enqueue("catalog.tasks.evaluate_backup", backup.pk)
        job.save(
            update_fields=[
                "state",
                "finished_at",
                "reported_started_at",
                "reported_finished_at",
                "lease_expires_at",
                "log_tail",
                "bytes_done",
                "bytes_total",
                "error_class",
                "error_message",
            ]
        )
        _AFTER_SUCCESS.get(job.kind, lambda job: None)(job)
        _announce(job, previous)
    return job, backup


def _late_acceptable(job: Job, report: BackupReport | None) -> bool:
    """A backup failed only because its lease ran out, reported finished with its manifest."""
    return (
        job.kind == JobKind.BACKUP
        and job.error_class == ErrorClass.LEASE_EXPIRED
        and report is not None
        and bool(report.manifest)
        and report.location == backup_destination(job)
    )


def _accept_late(job: Job, now: datetime) -> str:
    """Cancel ``job``'s queued retry so its late success stands; LeaseLost if the retry has begun.

    The retry's row is locked: the agent claiming it (``claim`` locks queued jobs with
    SKIP LOCKED) and this report take turns, so exactly one of them wins. Returns the
    line that records, in the job's log, that the report came late.
    """
    retries = list(Job.objects.select_for_update().filter(retry_of=job).order_by("pk"))
    started = [retry for retry in retries if retry.state != JobState.QUEUED]
    if started:
        raise LeaseLost(
            f"Job {job.pk}'s lease expired and its retry (job {started[0].pk}) is already "
            f"{started[0].state}; this report is no longer expected."
        )
    for retry in retries:
        retry.state = JobState.CANCELLED
        retry.finished_at = now
        retry.log_tail = f"[portal] cancelled: job {job.pk}, which this retried, reported success late."
        retry.save(update_fields=["state", "finished_at", "log_tail"])
        _announce(retry, JobState.QUEUED)
    cancelled = ", ".join(f"job {retry.pk}" for retry in retries) or "none"
    return (
        f"\n[portal] {now:%Y-%m-%d %H:%M:%S} UTC: success reported after the lease expired "
        f"(the job had been failed lease_expired at {job.finished_at:%Y-%m-%d %H:%M:%S} UTC); "
        f"accepted, queued retry cancelled: {cancelled}."
    )


def complete_failure(
    agent: Agent,
    job_id: int,
    *,
    error: str,
    log_tail: str = "",
    error_class: str = "",
    reported_started_at: datetime | None = None,
    reported_finished_at: datetime | None = None,
    now: datetime | None = None,
    damaged: list[str] | None = None,
) -> Job:
    """Close a job the agent could not finish; a backup is retried per its policy.

    ``error_class`` is the agent's own code (protocol 2), trusted when this portal
    knows it; without one (protocol 1, or a code from a newer agent) the error
    text is classified (``catalog.failures.classify``). Times as in ``complete_success``.
    ``damaged`` (protocol 4, with ``checksum_mismatch``): the locations of the chain members
    whose data or file list did not match (``_corruption_found``).
    """
    if error_class not in AGENT_ERROR_CLASSES:
        error_class = ""
    with transaction.atomic():
        job = _locked_job_of(agent, job_id)
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            return job  # the same report again
        _check_reportable(job)
        job.reported_started_at = reported_started_at
        job.reported_finished_at = reported_finished_at
        _fail(
            job,
            error=error,
            log_tail=log_tail,
            error_class=error_class,
            now=now or timezone.now(),
            damaged=damaged or [],
        )
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
    deleted = Backup.objects.filter(pk=job.backup_id, status=BackupStatus.EXPIRED, legal_hold=False).update(
        status=BackupStatus.DELETED, deleted_at=job.finished_at, index_entries=None
    )
    if deleted:
        # The file list goes with its recovery point, once that is certain (a stray file is
        # harmless; a backup whose file list vanished before a rollback is not).
        backup_job_id = Backup.objects.filter(pk=job.backup_id).values_list("job_id", flat=True).get()
        transaction.on_commit(lambda: file_lists.remove_file_list(backup_job_id))


def _restore_test_failed(job: Job, damaged: list[str]) -> None:
    if job.error_class == ErrorClass.LEASE_EXPIRED:
        return  # the agent went away: no verdict on the backup; tomorrow's run tries again
    _corruption_found(job, by="Restore test", damaged=damaged)


def _corruption_found(job: Job, *, by: str, damaged: list[str]) -> None:
    """A restore test, or a restore whose checksum did not match: the backup failed verification.

    Recorded wherever it is found, with the same critical alert, so the backup is
    refused for restores (``requests_app.services.submit_restore``) and the team knows.
    Which backup: the points the agent names as damaged (``_damaged_points``), else the job's.
    A damaged base makes every later point of its chain unrestorable (``restorable()``) and
    the client's next backup a full.
    """
    points = _damaged_points(job, damaged)
    Backup.objects.filter(pk__in=points).update(
        verified_at=job.finished_at, verification=Verification.FAILED, verification_job=job
    )
    others = [pk for pk in points if pk != job.backup_id]
    named = f"; damaged: backup {', '.join(map(str, others))}" if others else ""
    alerts.raise_client_alert(
        AlertKind.RESTORE_TEST_FAILED,
        AlertSeverity.CRITICAL,
        job.client,
        f"{by} of {job.client} (backup {job.backup_id}{named}) failed "
        f"({job.get_error_class_display().lower()}): {job.error_message[:300]}",
        job=job,
    )


def _damaged_points(job: Job, damaged: list[str]) -> list[int]:
    """The points a failed check found damaged: those of the job's own chain (the point and its
    bases) whose locations the agent named with ``checksum_mismatch`` (protocol 4); the job's
    point when it named none of them (an older agent names none)."""
    named = set(damaged)
    if named and job.error_class == ErrorClass.CHECKSUM_MISMATCH:
        members = [*chains.chain_of(job.backup), job.backup]
        found = [member.pk for member in members if member.location in named]
        if found:
            return found
    return [job.backup_id]


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


def _record_backup(job: Job, report: BackupReport) -> tuple[Backup, str]:
    """The new recovery point, with its file list when the agent uploaded it; and a line for the log.

    Raises InvalidReport (400) for a level the job was not planned (``chains.check_report``).
    """
    chains.check_report(job, report.level, report.base)
    policy = job.client.policy
    taken_at = job.started_at or timezone.now()
    backup = Backup(
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
    note = ""
    if report.level == BackupLevel.INCREMENTAL:
        _link_to_base(job, backup)
    elif job.level == BackupLevel.INCREMENTAL:  # the agent's log says why
        note = f"\n[portal] planned as an incremental on backup {job.base_id}; the agent took a full."
    # None: no file list announced (an older agent, a plugin that makes none); {}: announced, malformed.
    if report.index is not None and not (report.index and _attach_index(job, backup, report.index)):
        note += "\n[portal] file list not received: this point restores whole."
    backup.save(force_insert=True)
    return backup, note


def _link_to_base(job: Job, backup: Backup) -> None:
    """Make ``backup`` (not saved) an incremental on ``job``'s planned base, locked; LeaseLost if it went.

    The claim planned on an available base, and retention leaves a base alone while an open
    backup job builds on it; but a report that comes after its lease expired (``_accept_late``)
    may find its base expired meanwhile. Then the incremental cannot be restored and is not
    recorded: the agent drops the report and the queued retry takes its own backup.
    """
    base = Backup.objects.select_for_update(no_key=True).only("status", "full_id").get(pk=job.base_id)
    if base.status != BackupStatus.AVAILABLE:
        raise LeaseLost(
            f"Job {job.pk}'s base, backup {base.pk}, is {base.get_status_display().lower()} now: "
            "this incremental cannot be restored and is not recorded."
        )
    backup.level = BackupLevel.INCREMENTAL
    backup.base_id = base.pk
    backup.full_id = base.full_id or base.pk


_INDEX_FIELDS = ["index_entries", "index_kind", "index_size_bytes", "index_sha256"]


def _attach_index(job: Job, backup: Backup, index: dict) -> bool:
    """Give ``backup`` (not saved) the file list its agent uploaded; False if there is none."""
    if not file_lists.place_upload(job.pk, index["sha256"], index["size"]):
        return False
    backup.index_entries = index["entries"]
    backup.index_kind = index["kind"]
    backup.index_size_bytes = index["size"]
    backup.index_sha256 = index["sha256"]
    return True


# --- Failure, retry, lease expiry, cancel -----------------------------------------------


def _fail(
    job: Job,
    *,
    error: str,
    log_tail: str,
    now: datetime,
    error_class: str = "",
    damaged: list[str] | None = None,
) -> None:
    """Mark a locked running job failed, then retry or alert (``damaged``: see ``complete_failure``)."""
    previous = job.state
    cancelled = bool(job.cancel_requested_at)
    job.state = JobState.CANCELLED if cancelled else JobState.FAILED
    job.finished_at = now
    job.lease_expires_at = None
    job.error_message = error
    job.log_tail = log_tail[-LOG_TAIL_LIMIT:]
    job.error_class = "" if cancelled else (error_class or classify(error, log_tail))
    job.save(
        update_fields=[
            "state",
            "finished_at",
            "lease_expires_at",
            "error_message",
            "log_tail",
            "error_class",
            "reported_started_at",
            "reported_finished_at",
        ]
    )
    _announce(job, previous)
    if cancelled:
        return
    if job.kind == JobKind.BACKUP:
        _retry_or_alert(job, now)
    elif job.kind == JobKind.RESTORE_TEST:
        _restore_test_failed(job, damaged or [])
    elif job.kind == JobKind.RESTORE and job.error_class == ErrorClass.CHECKSUM_MISMATCH:
        _corruption_found(job, by="Restore", damaged=damaged or [])


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
        retry, created = _create_backup_job(
            client_id=job.client_id,
            agent_id=job.agent_id,
            trigger=JobTrigger.RETRY,
            attempt=job.attempt + 1,
            retry_of=job,
            not_before=now + retry_delay(job.attempt),
        )
        if created:
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


#: Attempts of a restore or restore test that never started on its agent before it fails for good.
REQUEUE_LIMIT = 3

LEASE_EXPIRED_ERROR = "The agent stopped reporting progress before the job finished."
NOT_RUNNING_ERROR = (
    "The agent did not receive or is not running this job: it was missing from the agent's "
    "list of running jobs."
)


def _never_started(job: Job) -> bool:
    """No progress was ever reported: the agent may never have received the job."""
    return (
        job.bytes_done == 0
        and job.bytes_total is None
        and job.started_at is not None
        and job.lease_expires_at is not None
        and job.lease_expires_at <= _lease_until(job.started_at)
    )


def _agent_lost(job: Job, *, error: str, now: datetime) -> None:
    """A locked running job its agent no longer has: retried like any failure (``lease_expired``).

    A restore or restore test that never started on the agent (no progress) did nothing
    on the target: it is queued again as its next attempt (the same job, so the
    request that asked for it follows it), up to ``REQUEUE_LIMIT`` attempts.
    """
    if (
        job.kind in (JobKind.RESTORE, JobKind.RESTORE_TEST)
        and not job.cancel_requested_at
        and job.attempt < REQUEUE_LIMIT
        and _never_started(job)
    ):
        previous = job.state
        job.log_tail = (
            f"{job.log_tail}\n[portal] {now:%Y-%m-%d %H:%M:%S} UTC: attempt {job.attempt} lost: {error} "
            f"Queued again as attempt {job.attempt + 1}."
        )[-LOG_TAIL_LIMIT:]
        job.state = JobState.QUEUED
        job.attempt += 1
        job.started_at = job.lease_expires_at = None
        job.not_before = now
        job.save(
            update_fields=["state", "attempt", "started_at", "lease_expires_at", "not_before", "log_tail"]
        )
        _announce(job, previous)
        return
    _fail(job, error=error, log_tail=job.log_tail, now=now, error_class=ErrorClass.LEASE_EXPIRED)


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
                _agent_lost(job, error=LEASE_EXPIRED_ERROR, now=now)
        reaped += len(jobs)
        if len(jobs) < batch:
            return reaped


def reconcile_running(
    agent: Agent,
    running: list[int],
    *,
    claimed_before: datetime,
    now: datetime | None = None,
    seen: list[OpenJob] | None = None,
) -> int:
    """Jobs the portal holds as running on ``agent`` that its poll does not list: lost, handled at once.

    ``running`` is what the agent holds (received, report not yet acknowledged).
    The agent polls one at a time and records the jobs of an answer before it
    polls again, so a job handed out in an earlier answer and missing from the list
    never reached it (that answer was lost: the agent gave up on it and polled
    again) or is gone (the agent restarted). Only jobs claimed before this poll
    arrived (``claimed_before``) are judged: never one handed out in this poll's
    own answer, nor one a concurrent poll is claiming right now. Each is handled
    like an expired lease (``_agent_lost``): a backup is retried, a restore or
    restore test that never started is queued again. Returns how many.

    The suspects come from ``seen`` (``agent.open_jobs``, read with the agent by this
    poll) or, without it, from a read here; nothing is written when there are none. Each suspect is
    re-checked under its lock: a late report, the reaper or a new claim may have
    changed it meanwhile.
    """
    now = now or timezone.now()
    held = set(running)

    def stale():
        return Job.objects.filter(agent=agent, state=JobState.RUNNING, started_at__lt=claimed_before).exclude(
            pk__in=held
        )

    if seen is None:
        ids = list(stale().values_list("pk", flat=True)[: CLAIM_BATCH * 10])
    else:
        # The same rule as ``stale``, on the rows this poll read (no query built for an idle poll).
        ids = [
            job.pk
            for job in seen
            if job.state == JobState.RUNNING
            and job.started_at is not None
            and job.started_at < claimed_before
            and job.pk not in held
        ][: CLAIM_BATCH * 10]
    if not ids:
        return 0
    with transaction.atomic():
        # Re-checked under the lock: a late report or the reaper may have closed them meanwhile.
        jobs = list(
            stale()
            .filter(pk__in=ids)
            .select_for_update(of=("self",))
            .select_related("client__policy", "client")
        )
        for job in jobs:
            _agent_lost(job, error=NOT_RUNNING_ERROR, now=now)
    return len(jobs)


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
