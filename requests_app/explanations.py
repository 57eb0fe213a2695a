"""A failed job's error, in words the person who asked for the restore understands."""

from __future__ import annotations

from catalog.choices import ErrorClass, JobState
from catalog.models import Job

_EXPLANATIONS = {
    ErrorClass.CHECKSUM_MISMATCH: (
        "The backup failed its integrity check (checksum mismatch), so nothing was written to the "
        "target. The backup team has been told; try an older recovery point."
    ),
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
    ErrorClass.LEASE_EXPIRED: (
        "The agent on the target server stopped reporting during the restore (it may have restarted). "
        "Check the server and submit the restore again."
    ),
}


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
    text = _EXPLANATIONS.get(job.error_class)
    if text is None:
        return f"The restore failed: {job.error_message[:500] or 'no reason was reported.'}"
    return text
