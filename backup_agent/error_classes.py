"""Why a job failed: the codes the agent sends as `error_class` (protocol 2).

This is the one list of them. The portal's `catalog.choices.ErrorClass` holds
the same strings plus `lease_expired`, which only the portal can decide (the
agent stopped reporting). docs/agent-protocol.md says what each one means.
Changing a string here changes the protocol: the portal must learn it first.
"""

from __future__ import annotations

# The OS, a tool or a database refused access: EACCES/EPERM, "permission
# denied", a database refusing the login (wrong password) or a privilege.
PERMISSION_DENIED = "permission_denied"
# No space (or quota) left where the job writes: ENOSPC/EDQUOT, or a tool saying so.
DISK_FULL = "disk_full"
# The database server could not be reached or has no such database: refused,
# unknown host, connect timeout, unknown database.
DATABASE_UNREACHABLE = "database_unreachable"
# A program the job needs is not installed, not on the plugin's PATH, or its
# interpreter is missing.
COMMAND_NOT_FOUND = "command_not_found"
# A tool ran past its time limit and was killed, or a tool reported a timeout.
TIMEOUT = "timeout"
# Stored data does not hash to the SHA-256 recorded when it was written.
CHECKSUM_MISMATCH = "checksum_mismatch"
# This server's allow-list does not grant the job; nothing was read or written.
REFUSED_BY_AGENT = "refused_by_agent"
# The job cannot run as given: bad or unknown plugin options, an unknown plugin
# or job kind, a malformed job, a restore target that holds data while
# overwrite is false. Trying again changes nothing; the job must change.
INVALID_JOB = "invalid_job"
# Anything else (a cancel, a restore test whose contents differ, a damaged
# archive, a bug); the `error` text says what.
UNKNOWN = "unknown"

ALL: tuple[str, ...] = (
    PERMISSION_DENIED,
    DISK_FULL,
    DATABASE_UNREACHABLE,
    COMMAND_NOT_FOUND,
    TIMEOUT,
    CHECKSUM_MISMATCH,
    REFUSED_BY_AGENT,
    INVALID_JOB,
    UNKNOWN,
)
