"""The agent's state folder: its instance id and a record of the staging folders it creates.

The state folder (config `state_dir`, by default the parent of `spool_dir`,
i.e. /var/lib/backup-agent) belongs to this host, not to the config file: a
config copied to another server finds no `instance-id` there and gets a new
one, which is how the portal tells two hosts sharing one agent token apart.

`staging.json` lists the staging folders the agent is about to create
(`.partial-job-<id>` backup folders on storage, `.restore-<id>-<hex>` folders
inside restore targets), written before each folder is made. After a crash or
a `kill -9` the next start finds them there and removes them, together with
any other stale staging of the same kind in the same parent folders (the
client's destination folder, the restore target), sparing the jobs running now.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import stat
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from backup_agent.fsutil import remove_tree, write_atomic

log = logging.getLogger(__name__)

INSTANCE_FILE = "instance-id"
STAGING_FILE = "staging.json"
_INSTANCE_ID = re.compile(r"^[0-9a-f]{32}$")
# The staging names the agent creates, and the job id each carries.
PARTIAL_NAME = re.compile(r"^\.partial-job-([0-9]+)$")
RESTORE_NAME = re.compile(r"^\.restore-([0-9]+)-[0-9a-f]{8}$")
_PATTERNS = (PARTIAL_NAME, RESTORE_NAME)
# Parent folders remembered for sweeping (client folders, restore targets): most recent last.
MAX_FOLDERS = 500


def staging_job(name: str) -> int | None:
    """The job id of an agent staging folder name, None for any other name."""
    for pattern in _PATTERNS:
        m = pattern.match(name)
        if m:
            return int(m.group(1))
    return None


def is_staging_name(name: str) -> bool:
    return staging_job(name) is not None


def read_or_create_instance_id(state_dir: Path) -> str:
    """This host's agent instance id (32 hex), created 0600 on first use."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / INSTANCE_FILE
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = ""
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s is unreadable (%s); creating a new instance id", path, exc)
        value = ""
    if _INSTANCE_ID.match(value):
        return value
    if value:
        log.warning("%s does not hold a valid instance id; creating a new one", path)
    value = secrets.token_hex(16)
    write_atomic(path, (value + "\n").encode("ascii"), mode=0o600)
    return value


def instance_of(state_dir: Path) -> dict[str, str]:
    """The `instance` object of the enrol and poll bodies."""
    return {"id": read_or_create_instance_id(state_dir), "host": socket.getfqdn()}


class StagingRecord:
    """`staging.json` in the state folder; thread-safe within one agent process."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STAGING_FILE
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"staging": [], "folders": []}
        except (OSError, ValueError) as exc:
            # Set aside, not overwritten: the folders it lists can still be found and removed by hand.
            aside = self.path.with_name(self.path.name + ".unreadable")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            log.error("%s is unreadable (%s); kept as %s, starting a new record", self.path, exc, aside)
            return {"staging": [], "folders": []}
        if not isinstance(data, dict):
            data = {}
        staging = [
            e
            for e in data.get("staging", [])
            if isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("job"), int)
        ]
        folders = [f for f in data.get("folders", []) if isinstance(f, str)]
        return {"staging": staging, "folders": folders}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"), mode=0o600)

    def add(self, job_id: int, folder: Path) -> None:
        """Remember a staging folder before it is created (so a kill right after still finds it)."""
        path, parent = str(folder), str(folder.parent)
        with self._lock:
            data = self._read()
            if not any(e["path"] == path for e in data["staging"]):
                data["staging"].append({"path": path, "job": int(job_id)})
            folders = [f for f in data["folders"] if f != parent] + [parent]
            data["folders"] = folders[-MAX_FOLDERS:]
            self._write(data)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._read()["staging"])

    def sweep(self, running: Callable[[], Collection[int]], *, everywhere: bool = True) -> list[str]:
        """Remove stale staging of this agent; returns what was removed.

        Recorded folders of jobs not running here go, and so does any other
        agent staging name (`.partial-job-N`, `.restore-N-hex`) of a job not
        running here in the folders the agent wrote staging into (all of them
        when `everywhere`, else only those of the recorded folders: the cheap
        sweep after each job). Entries whose folder is gone are forgotten; one
        that cannot be removed stays for the next sweep.

        `running` is asked under the record's lock: a job that recorded its
        staging before the sweep began is seen as running.
        """
        removed: list[str] = []
        with self._lock:
            running = set(running())
            data = self._read()
            scan = set() if everywhere else {str(Path(e["path"]).parent) for e in data["staging"]}
            keep = []
            for entry in data["staging"]:
                if entry["job"] in running:
                    keep.append(entry)
                    continue
                path = Path(entry["path"])
                if _remove_staging(path):
                    removed.append(str(path))
                if os.path.lexists(path):
                    keep.append(entry)
            folders = []
            for parent in data["folders"]:
                if not everywhere and parent not in scan:
                    folders.append(parent)
                    continue
                try:
                    names = os.listdir(parent)
                except FileNotFoundError:
                    continue  # a target or client folder that is gone needs no more sweeping
                except OSError as exc:
                    log.warning("cannot look for stale staging in %s: %s", parent, exc)
                    folders.append(parent)
                    continue
                folders.append(parent)
                for name in names:
                    job = staging_job(name)
                    if job is None or job in running:
                        continue
                    path = Path(parent) / name
                    if _remove_staging(path):
                        removed.append(str(path))
            new = {"staging": keep, "folders": folders}
            if new != data:
                try:
                    self._write(new)
                except OSError as exc:
                    log.error("cannot update %s: %s", self.path, exc)
        for path in removed:
            log.info("removed stale staging folder %s", path)
        return removed


def _remove_staging(path: Path) -> bool:
    """Remove one staging folder (never through a symlink); True if it was there and is gone."""
    if not is_staging_name(path.name):
        return False  # a tampered record names something else: not ours to delete
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot inspect staging folder %s: %s", path, exc)
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    remove_tree(path)
    return not os.path.lexists(path)


