"""Which agents are current: the one place agent versions are compared (docs/agent.md, "Upgrading").

The portal ships the agent built from its own ``backup_agent/`` (agent_dist serves it at
/agent/backup-agent.pyz), so the version it ships is ``__version__`` in backup_agent/__init__.py,
read from that file as agent_dist.build.version() reads it for the zipapp's manifest: catalog
imports neither agent_dist nor the agent's code (tests/core/test_dependencies.py).

An agent is *outdated* when the version it reports is older than the shipped one, compared as
dotted integers ("4.0.10" is newer than "4.0.9"); it is *unsupported* when the protocol it
speaks is older than ``Agent.OLDEST_PROTOCOL``, and then every call it makes is refused.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

CURRENT = "current"
OUTDATED = "outdated"
UNSUPPORTED = "unsupported"
#: An agent that has reported no version yet (enrolment issued, never polled): nothing to upgrade.
UNKNOWN = "unknown"
#: The values of the metrics' ``version_status`` label and of the admin's filter: bounded.
STATUSES = (CURRENT, OUTDATED, UNSUPPORTED, UNKNOWN)

_LEADING = re.compile(r"\d+(?:\.\d+)*")
_VERSION_LINE = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)


@functools.cache
def shipped_version() -> str:
    """The version of the agent this portal serves (agent_dist builds it from the same source)."""
    spec = importlib.util.find_spec("backup_agent")  # found, not imported
    if spec is None or spec.origin is None:
        return ""
    found = _VERSION_LINE.search(Path(spec.origin).read_text(encoding="utf-8"))
    return found.group(1) if found else ""


def parse(version: str) -> tuple[int, ...]:
    """ "4.0.1" → (4, 0, 1); a suffix (".dev0", "rc1", "+local") is ignored; unreadable → ()."""
    found = _LEADING.match((version or "").strip())
    if not found:
        return ()
    parts = [int(part) for part in found.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # "4.0" == "4.0.0"
        parts.pop()
    return tuple(parts)


def is_older(version: str, than: str) -> bool:
    return parse(version) < parse(than)


def is_outdated(version: str) -> bool:
    """Older than the shipped agent; a version reported but unreadable counts as older (none: unknown)."""
    return bool((version or "").strip()) and is_older(version, shipped_version())


def is_supported(protocol: int) -> bool:
    from catalog.models import Agent  # catalog.models imports this module's constants

    return protocol >= Agent.OLDEST_PROTOCOL


def status(version: str, protocol: int) -> str:
    if not (version or "").strip():
        return UNKNOWN  # never polled: its protocol is the default, not one it spoke
    if not is_supported(protocol):
        return UNSUPPORTED
    return OUTDATED if is_outdated(version) else CURRENT
