"""Why a failed job failed: the agent's own code, or else a guess from its words.

An agent of protocol 2 sends ``error_class`` with a failed report
(docs/agent-protocol.md, "Error classes"); a code in ``AGENT_ERROR_CLASSES``
is trusted as is. Text matching (``classify``) is only the fallback, for
protocol 1 agents and their spooled reports, and for a code this portal does
not know (a newer agent): it is never a reason to refuse a report.

The patterns are the messages the tools really print (tar, pg_dump, mysqldump,
the shell's exec, the kernel's errno strings), checked in order: the first
match wins, so more specific classes come first.
"""

from __future__ import annotations

import re

from catalog.choices import ErrorClass

#: The codes an agent may send: all but ``lease_expired``, which only the portal decides.
AGENT_ERROR_CLASSES = frozenset(ErrorClass.values) - {ErrorClass.LEASE_EXPIRED}

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # First: the agent refused before running anything, whatever else the message says.
    (ErrorClass.REFUSED_BY_AGENT, re.compile(r"^refused by agent:", re.I | re.M)),
    (ErrorClass.CHECKSUM_MISMATCH, re.compile(r"checksum mismatch|sha-?256 mismatch", re.I)),
    (ErrorClass.DISK_FULL, re.compile(r"no space left on device|disk full|ENOSPC|quota exceeded", re.I)),
    (ErrorClass.PERMISSION_DENIED, re.compile(r"permission denied|EACCES|operation not permitted", re.I)),
    (
        ErrorClass.COMMAND_NOT_FOUND,
        re.compile(r"command not found|no such file or directory: '[^']+'|executable not found", re.I),
    ),
    (
        ErrorClass.DATABASE_UNREACHABLE,
        re.compile(
            r"connection refused|could not connect|can't connect to (local )?mysql|"
            r"connection to server .* failed|unknown database|database .* does not exist|"
            r"access denied for user|password authentication failed",
            re.I,
        ),
    ),
    (ErrorClass.TIMEOUT, re.compile(r"timed out|timeout", re.I)),
]


def classify(error: str, log_tail: str = "") -> str:
    """The class the text suggests (protocol 1 agents, or an ``error_class`` this portal does not know)."""
    text = f"{error}\n{log_tail}"
    for error_class, pattern in _PATTERNS:
        if pattern.search(text):
            return error_class
    return ErrorClass.UNKNOWN
