"""The archives this agent wrote: recorded at commit, reported to the portal, removed when it says so.

A backup whose report was lost for good (its retry already ran) leaves its
folder `<application>/<client>/job-N` on storage, unknown to the catalog.
The portal can only find such orphans if the agent says what it wrote, so:

- every backup folder the agent commits (after the atomic rename into place)
  is recorded in `archives.json` in the state folder (0600, atomic rewrite,
  the newest MAX_ARCHIVES kept);
- `report()` lists those whose folder still exists, with their size, for the
  poll body's `archives` (and forgets those that are gone);
- `remove()` deletes one folder the portal asks to remove (`remove_archives`
  in a poll answer), but only one of this record, inside its recorded
  storage root, with that root still granted by the allow-list.

Nothing else on storage is ever reported or deleted from here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_agent.allow import AllowList
from backup_agent.errors import InvalidOptions
from backup_agent.fsutil import write_atomic
from backup_agent.storage import FilesystemStorage

log = logging.getLogger(__name__)

ARCHIVES_FILE = "archives.json"
# The newest archives kept in the record; older ones are forgotten (and so never removed).
MAX_ARCHIVES = 5000
_JOB_NAME = re.compile(r"^job-([0-9]+)$")


def job_of_location(location: str) -> int | None:
    """The job id in a location's last segment (`.../job-123` -> 123), None if it has none."""
    m = _JOB_NAME.match(location.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Removal:
    """What became of one location the portal asked to remove."""

    location: str
    outcome: str  # removed | gone | refused | busy | failed
    reason: str = ""


class ArchiveRecord:
    """`archives.json` in the state folder; thread-safe within one agent process."""

    def __init__(self, state_dir: Path, limit: int = MAX_ARCHIVES) -> None:
        self.path = Path(state_dir) / ARCHIVES_FILE
        self.limit = limit
        self._lock = threading.Lock()

    # --- the file -----------------------------------------------------------------

    def _read(self) -> list[dict[str, str]] | None:
        """The entries, oldest first; [] when there is no record, None when it cannot be read."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("%s is unreadable (%s)", self.path, exc)
            return None
        raw = data.get("archives") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            log.error("%s does not hold a list of archives", self.path)
            return None
        return [
            {"root": e["root"], "location": e["location"]}
            for e in raw
            if isinstance(e, dict) and isinstance(e.get("root"), str) and isinstance(e.get("location"), str)
        ]

    def _write(self, entries: list[dict[str, str]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = json.dumps({"archives": entries[-self.limit :]}, indent=1, sort_keys=True)
        write_atomic(self.path, text.encode("utf-8"), mode=0o600)

    def entries(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._read() or [])

    def add(self, root: str, location: str) -> None:
        """Record a committed backup folder (`location` relative to storage `root`)."""
        entry = {"root": str(root), "location": location}
        with self._lock:
            # An unreadable record is replaced: keeping it would lose every new archive instead.
            entries = [e for e in self._read() or [] if e != entry]
            self._write([*entries, entry])

    def _forget(self, gone: Iterable[dict[str, str]]) -> None:
        """Drop entries from the record (re-read under the lock: commits may have come in meanwhile)."""
        gone = [dict(e) for e in gone]
        if not gone:
            return
        with self._lock:
            entries = self._read()
            if entries is None:
                return
            kept = [e for e in entries if e not in gone]
            if kept != entries:
                try:
                    self._write(kept)
                except OSError as exc:
                    log.error("cannot update %s: %s", self.path, exc)

    # --- the report -----------------------------------------------------------------

    def report(self) -> list[dict[str, Any]] | None:
        """`[{"location", "size"}]` of every recorded archive whose folder still exists.

        Recorded folders that are gone (expired by the portal, removed) are
        dropped from the record. Folders on a storage root that is missing or
        empty (an unmounted share looks like that) are neither reported nor
        dropped: they are back when the share is. None when the record cannot
        be read: the agent cannot say what it wrote, so the poll says nothing.
        """
        with self._lock:
            entries = self._read()
        if entries is None:
            return None
        present: dict[str, int] = {}
        gone: list[dict[str, str]] = []
        mounted: dict[str, bool] = {}
        for entry in entries:
            root = entry["root"]
            if root not in mounted:
                mounted[root] = _looks_mounted(root)
                if not mounted[root]:
                    log.warning("storage root %s is missing or empty: its archives are not reported", root)
            if not mounted[root]:
                continue
            try:
                FilesystemStorage(root).job_dir(entry["location"])
            except InvalidOptions as exc:
                # Not a folder this agent could have written (a tampered record): never reported.
                log.warning("dropping %s from %s: %s", entry["location"], self.path, exc)
                gone.append(entry)
                continue
            folder = Path(root) / entry["location"]
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                gone.append(entry)
                continue
            except OSError as exc:
                log.warning("cannot look at archive %s: %s", folder, exc)
                continue
            if not stat.S_ISDIR(st.st_mode):
                gone.append(entry)  # not the folder this agent wrote any more
                continue
            # One entry per location (the portal knows locations only), should two roots hold it.
            present[entry["location"]] = present.get(entry["location"], 0) + folder_size(folder)
        for entry in gone:
            log.info("archive %s/%s is gone; forgotten", entry["root"], entry["location"])
        self._forget(gone)
        return [{"location": location, "size": size} for location, size in present.items()]

    # --- removal --------------------------------------------------------------------

    def remove_all(
        self,
        locations: Any,
        allow: AllowList,
        busy: Callable[[], tuple[Collection[str], Collection[int]]],
    ) -> list[Removal]:
        """Handle a poll answer's `remove_archives`: each listed location of this record, safely.

        `busy` gives what jobs of this agent use now: locations (destinations
        of running backups, backups being read, locations of spooled reports)
        and job ids (running, or report still spooled). A location among the
        first or named after one of the second (`job-<id>`) is left alone.
        """
        if not isinstance(locations, list):
            log.warning("ignoring remove_archives from the portal: not a list (%r)", locations)
            return []
        done = []
        # What jobs use is read once: only this (poll) thread starts jobs, and it is here.
        # The record never holds more than MAX_ARCHIVES, so a longer list is a hostile one.
        in_use, jobs_in_use = busy()
        seen: set[str] = set()
        for location in locations[:MAX_ARCHIVES]:
            if isinstance(location, str):
                if location in seen:
                    continue
                seen.add(location)
            item = self.remove(location, allow, in_use, jobs_in_use)
            level = logging.INFO if item.outcome in ("removed", "gone") else logging.WARNING
            why = f" ({item.reason})" if item.reason else ""
            shown = item.location.encode("unicode_escape").decode("ascii")  # the portal's text: one log line
            log.log(level, "archive removal asked by the portal: %s: %s%s", shown, item.outcome, why)
            done.append(item)
        return done

    def remove(
        self,
        location: Any,
        allow: AllowList,
        busy: Collection[str] = (),
        busy_jobs: Collection[int] = (),
    ) -> Removal:
        """Remove one recorded archive folder; never anything the record does not hold."""
        if not isinstance(location, str):
            return Removal(repr(location)[:200], "refused", "not a location")
        matches = [e for e in self.entries() if e["location"] == location]
        if not matches:
            return Removal(location[:200], "refused", "not an archive this agent wrote")
        if location in busy or job_of_location(location) in busy_jobs:
            return Removal(location[:200], "busy", "a job of this agent uses it now; not removed")
        outcomes = [self._remove_entry(entry, allow) for entry in matches]
        # One location is one job's folder; should two roots hold it, the worst outcome is the one told.
        for outcome in ("failed", "refused", "removed", "gone"):
            for item in outcomes:
                if item.outcome == outcome:
                    return item
        raise AssertionError("unreachable")

    def _remove_entry(self, entry: dict[str, str], allow: AllowList) -> Removal:
        root, location = entry["root"], entry["location"]
        try:
            # Lexical checks (relative, no '..', no hidden names, ends in job-N) and,
            # after resolving symlinks, still inside the root.
            folder = FilesystemStorage(root).job_dir(location)
        except InvalidOptions as exc:
            return Removal(location, "refused", str(exc))
        if not _looks_mounted(root):
            # Missing or empty: an unmounted share, whose folders are not "gone" but away.
            return Removal(location, "failed", f"storage root {root} is missing or empty (not mounted?)")
        lexical = Path(root) / location
        try:
            st = os.lstat(lexical)
        except FileNotFoundError:
            self._forget([entry])
            return Removal(location, "gone")
        except OSError as exc:
            return Removal(location, "failed", str(exc))
        if not allow.grants_storage(root):
            return Removal(location, "refused", f"storage root {root} is not in this server's allow-list")
        if not stat.S_ISDIR(st.st_mode):
            # A symlink (or a file) where the agent wrote a folder: never followed, never removed.
            return Removal(location, "refused", f"{lexical} is not a folder (a symlink?)")
        try:
            FilesystemStorage(root).expire(location)  # the same removal as a backup past retention
        except OSError as exc:
            if os.path.lexists(folder):
                return Removal(location, "failed", str(exc))
        self._forget([entry])
        return Removal(location, "removed", str(folder))


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under `folder` (symlinks not followed)."""
    total = 0
    for top, dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    return total


def _looks_mounted(root: str) -> bool:
    try:
        with os.scandir(root) as it:
            return any(True for _ in it)
    except OSError:
        return False
