"""A failed job's error, in words the person who asked for the restore understands."""

from __future__ import annotations

from catalog.choices import ErrorClass, JobState
from catalog.models import Backup, Job
from catalog.services import chains

_EXPLANATIONS = {
    ErrorClass.PERMISSION_DENIED: (
        "The agent was not allowed to write to the target location (permission denied). "
        "Choose a folder the agent's user can write to, or ask the server's administrator."
    ),
    ErrorClass.DISK_FULL: (
        "The target ran out of space (disk full). Free some space or choose another location."
    ),
    ErrorClass.DATABASE_UNREACHABLE: (
        "The agent could not reach the database server to restore into. Check that it is running."
    ),
    ErrorClass.COMMAND_NOT_FOUND: (
        "A tool the restore needs is not installed on the target server (command not found)."
    ),
    ErrorClass.TIMEOUT: "The restore took too long and was stopped (timeout).",
}


def newest_good_backup(client_id: int) -> Backup | None:
    """The client's newest recovery point that can be restored (available, not known to be
    damaged, its chain whole)."""
    return chains.newest_restorable(client_id)


def describe(backup: Backup) -> str:
    return f"#{backup.pk} of {backup.taken_at:%Y-%m-%d %H:%M} UTC"


def good_alternative(client_id: int) -> str:
    good = newest_good_backup(client_id)
    if good is None:
        return "This client has no other good recovery point; the backup team has been told."
    return f"The newest good recovery point is {describe(good)}."


def _damaged(job: Job) -> str:
    return (
        f"The backup {describe(job.backup)} could not be restored: it, or a point of the chain it "
        "builds on, failed its integrity check (checksum mismatch), so nothing was written to the "
        "target. The damaged point is marked as failed verification and the backup team has been "
        f"told. {good_alternative(job.client_id)}"
    )


def _lost(job: Job) -> str:
    return (
        "The agent on the target server lost the restore after it had started: "
        f"{job.error_message[:300] or 'it stopped reporting.'} The target may hold a partial "
        "restore. Check the server and submit the restore again."
    )


def explain(job: Job) -> str:
    if job.state == JobState.CANCELLED:
        return "The restore was cancelled."
    if "overwrite" in job.error_message.lower():
        return (
            "The target already holds data and the request did not ask to overwrite it; "
            "nothing was changed. Choose an empty location, or ask again with overwrite."
        )
    if job.error_class == ErrorClass.REFUSED_BY_AGENT:
        # The agent's own words name the command its server's administrator would run.
        return (
            "The target server's own allow-list does not let the agent restore there; nothing was "
            "read or written. Ask its administrator, or choose an allowed place. "
            f"The agent said: {job.error_message[:500]}"
        )
    if job.error_class == ErrorClass.INVALID_JOB:
        return f"The restore could not run as asked; nothing was changed. {job.error_message[:500]}"
    if job.error_class == ErrorClass.CHECKSUM_MISMATCH and job.backup_id:
        return _damaged(job)
    if job.error_class == ErrorClass.LEASE_EXPIRED:
        return _lost(job)
    text = _EXPLANATIONS.get(job.error_class)
    if text is None:
        return f"The restore failed: {job.error_message[:500] or 'no reason was reported.'}"
    return text
