"""The spool: finished jobs' reports, kept on disk until the portal acknowledges them.

A report is written here (atomically, fsynced) before it is sent, and removed
only on 200 or 409. So a backup that finished while the portal was down, or
just before the agent was killed, is still reported: the data it describes is
already on protection storage and the catalog must learn about it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_agent.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledReport:
    job_id: int
    report: dict[str, Any]
    spooled_at: float
    # The backup's index file on protection storage, uploaded before the report
    # is sent (docs/agent-protocol.md); None when there is none to upload.
    index_file: str | None = None


class Spool:
    """A folder of `<job id>.json` files, one pending report each."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, job_id: int, report: dict[str, Any], index_file: str | None = None) -> None:
        """Persist a report and where its index is; a later attempt's report for the job replaces it."""
        self.ensure()
        entry: dict[str, Any] = {"job_id": int(job_id), "spooled_at": time.time(), "report": report}
        if index_file is not None:
            entry["index_file"] = str(index_file)
        write_atomic(self._path(job_id), json.dumps(entry, sort_keys=True).encode("utf-8"))

    def remove(self, job_id: int) -> None:
        try:
            self._path(job_id).unlink()
        except FileNotFoundError:
            return  # already removed by a concurrent resend; the goal is met
        fsync_dir(self.directory)

    def pending(self) -> list[SpooledReport]:
        """Spooled reports, oldest first. Unreadable files are kept aside, not deleted."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob("*.json"):
            if not path.stem.isdigit():
                continue
            try:
                entry = json.loads(path.read_bytes())
                index_file = entry.get("index_file")
                found.append(
                    SpooledReport(
                        int(entry["job_id"]),
                        entry["report"],
                        float(entry["spooled_at"]),
                        index_file if isinstance(index_file, str) else None,
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Never drop a report silently; park it for a person to look at.
                log.error("spool entry %s is unreadable (%s); moved aside", path, exc)
                os.replace(path, path.with_suffix(".bad"))
        return sorted(found, key=lambda e: (e.spooled_at, e.job_id))

    def _path(self, job_id: int) -> Path:
        return self.directory / f"{int(job_id)}.json"
