"""Errors the agent reports to the portal.

The portal classifies a failed job by looking for a few distinctive phrases in
the `error` text ("checksum mismatch", "permission denied", "no space left on
device", "command not found", "connection refused", "timed out", ...). Every
error raised on purpose is an AgentError whose message is meant to be read by
a person and contains one of those phrases where one applies.
"""

from __future__ import annotations

import errno

# Phrases a tool may print on stderr, mapped to the phrase the portal knows.
# Checked in order, case-insensitively, against the tool's stderr tail.
_TOOL_PHRASES: tuple[tuple[str, str], ...] = (
    ("no space left on device", "no space left on device"),
    ("connection refused", "connection refused"),
    ("can't connect to", "connection refused"),
    ("could not connect to", "connection refused"),
    ("could not translate host name", "connection refused"),
    ("unknown mysql server host", "connection refused"),
    ("timed out", "timed out"),
    ("timeout expired", "timed out"),
    ("password authentication failed", "authentication failed"),
    ("access denied", "permission denied"),
    ("permission denied", "permission denied"),
    ("does not exist", "not found"),
    ("unknown database", "not found"),
)


class AgentError(Exception):
    """A failure with a message fit for the job's `error` field."""


class ConfigError(AgentError):
    """The agent's configuration file is missing or invalid."""


class InvalidOptions(AgentError):
    """A job's plugin options, target or storage settings are not acceptable."""

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid options: {message}")


class ChecksumMismatch(AgentError):
    """Stored data does not match the SHA-256 recorded when it was written."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch: {what}: expected sha256 {expected}, found {actual}")


class TargetNotEmpty(AgentError):
    """A restore would overwrite existing data and overwrite was not asked for."""

    def __init__(self, target: str) -> None:
        super().__init__(f"target not empty: {target} already holds data and overwrite is false")


class ToolNotFound(AgentError):
    """An external program a plugin needs is not installed or not on PATH."""

    def __init__(self, program: str) -> None:
        super().__init__(f"command not found: {program}")


class ToolFailed(AgentError):
    """An external program exited with a non-zero status."""


class TimedOut(AgentError):
    """An external program ran past its time limit and was killed."""


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
    starts with "refused by agent:" (the portal classifies on it) and, where
    possible, ends with the command that would allow the job.
    """

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
    """Turn an OSError into the lower-case phrase the portal classifies.

    strerror is "No space left on device", "Permission denied", ...; lower-cased
    it is exactly the phrase the portal looks for.
    """
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno == errno.ENOENT:
        reason = "not found"
    where = exc.filename if exc.filename is not None else ""
    if isinstance(where, bytes):
        where = where.decode("utf-8", "replace")
    return f"{reason}: {where}" if where else reason


def describe_tool_failure(program: str, returncode: int, stderr_tail: list[str]) -> str:
    """Message for a tool that exited non-zero: canonical phrase plus its own last words."""
    text = "\n".join(stderr_tail).lower()
    phrase = next((canon for needle, canon in _TOOL_PHRASES if needle in text), "")
    last = next((line.strip() for line in reversed(stderr_tail) if line.strip()), "")
    parts = [f"{program} failed (exit status {returncode})"]
    if phrase:
        parts.append(phrase)
    if last:
        parts.append(last[:500])
    return ": ".join(parts)
