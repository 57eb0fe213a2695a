"""Errors the agent reports to the portal.

Every error raised on purpose is an AgentError: its message is meant to be
read by a person (it becomes the report's `error`), and its `error_class` is
one of the codes in backup_agent.error_classes (the report's `error_class`,
protocol 2). The messages still contain the phrases older portals classify
text by ("checksum mismatch", "permission denied", "no space left on device",
"command not found", "connection refused", "timed out", ...), so an old portal
that ignores `error_class` sorts them as before.
"""

from __future__ import annotations

import errno
import re

from backup_agent import error_classes as ec

# What a tool's stderr says, the canonical phrase put into the message, and
# the class it means. Checked in order, case-insensitively, against the
# failing tool's stderr tail: the first match wins.
_TOOL_PHRASES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), phrase, code)
    for pattern, phrase, code in (
        (r"no space left on device", "no space left on device", ec.DISK_FULL),
        (r"disk quota exceeded", "disk quota exceeded", ec.DISK_FULL),
        (r"connection refused", "connection refused", ec.DATABASE_UNREACHABLE),
        (r"can't connect to", "connection refused", ec.DATABASE_UNREACHABLE),
        (r"could not connect to", "connection refused", ec.DATABASE_UNREACHABLE),
        (r"could not translate host name", "connection refused", ec.DATABASE_UNREACHABLE),
        (r"unknown mysql server host", "connection refused", ec.DATABASE_UNREACHABLE),
        # libpq's words when PGCONNECT_TIMEOUT runs out: the server never answered.
        (r"timeout expired", "timed out", ec.DATABASE_UNREACHABLE),
        (r"timed out", "timed out", ec.TIMEOUT),
        # A database refusing the login is refused access, not unreachable:
        # the fix is the credentials (plugin_env, ~/.pgpass, ~/.my.cnf).
        (r"password authentication failed", "authentication failed", ec.PERMISSION_DENIED),
        (r"access denied", "permission denied", ec.PERMISSION_DENIED),
        (r"permission denied", "permission denied", ec.PERMISSION_DENIED),
        (r"command not found", "command not found", ec.COMMAND_NOT_FOUND),
        (r"database \S+ does not exist", "not found", ec.DATABASE_UNREACHABLE),
        (r"unknown database", "not found", ec.DATABASE_UNREACHABLE),
        (r"does not exist", "not found", ec.UNKNOWN),
    )
)

# OSError errno -> class. ENOENT is not here: a missing program is
# command_not_found (process.py knows it is starting one), a missing file is
# not a class of its own.
_ERRNO_CLASSES: dict[int, str] = {
    errno.ENOSPC: ec.DISK_FULL,
    errno.EDQUOT: ec.DISK_FULL,
    errno.EACCES: ec.PERMISSION_DENIED,
    errno.EPERM: ec.PERMISSION_DENIED,
    errno.ETIMEDOUT: ec.TIMEOUT,
}


class AgentError(Exception):
    """A failure with a message fit for the job's `error` field and a class for `error_class`.

    Subclasses set `error_class`; a plain AgentError is `unknown` unless the
    raiser knows better and passes `error_class=`.
    """

    error_class: str = ec.UNKNOWN
    # Protocol 4: the locations of the recovery points found damaged (a chain restore's failed
    # check), sent as the report's "damaged" so the portal marks those, not just the job's point.
    damaged: tuple[str, ...] = ()

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        if error_class is not None:
            if error_class not in ec.ALL:
                raise ValueError(f"{error_class!r} is not an error class (backup_agent.error_classes)")
            self.error_class = error_class


class ConfigError(AgentError):
    """The agent's configuration file is missing or invalid."""


class InvalidOptions(AgentError):
    """A job's plugin options, target or storage settings are not acceptable."""

    error_class = ec.INVALID_JOB

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid options: {message}")


class ChecksumMismatch(AgentError):
    """Stored data does not match the SHA-256 recorded when it was written."""

    error_class = ec.CHECKSUM_MISMATCH

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch: {what}: expected sha256 {expected}, found {actual}")


class TargetNotEmpty(AgentError):
    """A restore would overwrite existing data and overwrite was not asked for."""

    error_class = ec.INVALID_JOB

    def __init__(self, target: str) -> None:
        super().__init__(f"target not empty: {target} already holds data and overwrite is false")


class ToolNotFound(AgentError):
    """An external program a plugin needs is not installed or not on PATH."""

    error_class = ec.COMMAND_NOT_FOUND

    def __init__(self, program: str) -> None:
        super().__init__(f"command not found: {program}")


class ToolFailed(AgentError):
    """An external program exited with a non-zero status (see tool_failure)."""


class TimedOut(AgentError):
    """An external program ran past its time limit and was killed."""

    error_class = ec.TIMEOUT


class Cancelled(AgentError):
    """The portal asked to stop the job, its lease was lost, or the agent is stopping."""


class StorageError(AgentError):
    """The protection storage layout is not what the job expects."""


class UnsafeArchive(AgentError):
    """An archive member would land outside the restore target or is a device."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"unsafe archive member refused: {detail}")


class RefusedByAgent(AgentError):
    """The job asks for something this server's allow-list does not grant.

    The allow-list is set by the server's administrator in the agent's config
    file, so a portal that was taken over cannot widen it. The message always
    starts with "refused by agent:" (older portals classify on it) and, where
    possible, ends with the command that would allow the job.
    """

    error_class = ec.REFUSED_BY_AGENT

    def __init__(self, detail: str) -> None:
        super().__init__(f"refused by agent: {detail}")


class PortalError(Exception):
    """The portal answered with an error status."""

    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(f"portal answered {status} {code}: {detail}".rstrip(": "))
        self.status = status
        self.code = code
        self.detail = detail


class PortalUnreachable(Exception):
    """The portal could not be reached at all (DNS, TCP, TLS, timeout)."""


def describe_os_error(exc: OSError) -> str:
    """Turn an OSError into a lower-case message ("no space left on device: /mnt/x").

    strerror is "No space left on device", "Permission denied", ...; lower-cased
    it is the phrase older portals look for.
    """
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno == errno.ENOENT:
        reason = "not found"
    where = exc.filename if exc.filename is not None else ""
    if isinstance(where, bytes):
        where = where.decode("utf-8", "replace")
    return f"{reason}: {where}" if where else reason


def os_error_class(exc: OSError) -> str:
    """The error class of an OSError, by its errno."""
    if exc.errno in _ERRNO_CLASSES:
        return _ERRNO_CLASSES[exc.errno]
    return ec.TIMEOUT if isinstance(exc, TimeoutError) else ec.UNKNOWN


def os_failure(exc: OSError) -> AgentError:
    """An AgentError for an OSError: its description and its class."""
    return AgentError(describe_os_error(exc), error_class=os_error_class(exc))


def classify_tool_output(stderr_tail: list[str]) -> tuple[str, str]:
    """(canonical phrase, error class) for a failed tool's stderr; ("", unknown) when nothing matches."""
    text = "\n".join(stderr_tail)
    return next(
        ((phrase, code) for pattern, phrase, code in _TOOL_PHRASES if pattern.search(text)), ("", ec.UNKNOWN)
    )


def describe_tool_failure(program: str, returncode: int, stderr_tail: list[str]) -> str:
    """Message for a tool that exited non-zero: canonical phrase plus its own last words."""
    phrase, _ = classify_tool_output(stderr_tail)
    last = next((line.strip() for line in reversed(stderr_tail) if line.strip()), "")
    parts = [f"{program} failed (exit status {returncode})"]
    if phrase:
        parts.append(phrase)
    if last:
        parts.append(last[:500])
    return ": ".join(parts)


def tool_failure(program: str, returncode: int, stderr_tail: list[str]) -> ToolFailed:
    """The error for a tool that exited non-zero, classed by what its stderr says."""
    _, code = classify_tool_output(stderr_tail)
    return ToolFailed(describe_tool_failure(program, returncode, stderr_tail), error_class=code)
