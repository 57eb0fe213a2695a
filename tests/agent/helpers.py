"""Job payloads as the portal sends them, and a way to run one without a portal."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from backup_agent.allow import AllowList
from backup_agent.config import Config
from backup_agent.executor import Executor, new_context
from backup_agent.progress import Progress
from backup_agent.runner import Agent

_ids = itertools.count(1000)


def config(**overrides: Any) -> Config:
    values: dict[str, Any] = {
        "server": "http://127.0.0.1:9",
        "agent_token": "agent-token-0123456789",
        "hostname": "app01.test",
        "spool_dir": "/nonexistent-spool",
        "progress_interval": 0.05,
        "tool_timeout": 120.0,
    }
    values.update(overrides)
    return Config(**values)


def client(plugin: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"id": 5, "name": "app01-data", "application": "orders", "plugin": plugin, "options": options}


def storage(root: Path, compression: str = "none") -> dict[str, Any]:
    return {"kind": "filesystem", "root": str(root), "compression": compression}


def backup_job(plugin: str, options: dict[str, Any], root: Path, compression: str = "none") -> dict[str, Any]:
    job_id = next(_ids)
    return {
        "id": job_id,
        "kind": "backup",
        "attempt": 1,
        "lease_expires_at": "2030-01-01T00:00:00Z",
        "client": client(plugin, options),
        "storage": storage(root, compression),
        "destination": f"orders/app01-data/job-{job_id}",
        "backup": None,
        "target": None,
    }


def backup_ref(report: dict[str, Any]) -> dict[str, Any]:
    """The `backup` object the portal sends for restores of a backup it recorded from `report`."""
    return {
        "id": 88,
        "location": report["location"],
        "sha256": report["sha256"],
        "size": report["size"],
        "stored_size": report["stored_size"],
        "compression": report["compression"],
        "manifest": report.get("manifest", {}),
    }


def restore_job(
    plugin: str,
    options: dict[str, Any],
    root: Path,
    backup: dict[str, Any],
    target: str,
    overwrite: bool = False,
) -> dict[str, Any]:
    return {
        "id": next(_ids),
        "kind": "restore",
        "attempt": 1,
        "client": client(plugin, options),
        "storage": storage(root, backup.get("compression", "none")),
        "destination": None,
        "backup": backup,
        "target": {"location": target, "overwrite": overwrite},
    }


def other_job(
    kind: str, plugin: str, options: dict[str, Any], root: Path, backup: dict[str, Any]
) -> dict[str, Any]:
    """A restore_test or expire job."""
    return {
        "id": next(_ids),
        "kind": kind,
        "attempt": 1,
        "client": client(plugin, options),
        "storage": storage(root, backup.get("compression", "none")),
        "destination": None,
        "backup": backup,
        "target": None,
    }


def tool(name: str) -> str:
    """The absolute path of a program: the allow-list names programs by absolute path."""
    path = shutil.which(name)
    assert path, f"{name} is not installed"
    return path


def allow_for(job: dict[str, Any]) -> AllowList:
    """The allow-list a server's admin would write for this job: its storage, sources, target, program.

    A files restore into "/" is left to the in-place rule (only the client's paths allowed).
    """
    client, target = job["client"], (job.get("target") or {}).get("location")
    plugin, options = client["plugin"], client["options"]
    root = job["storage"]["root"]
    allow: dict[str, list[str]] = {"storage": [root] if root.startswith("/") else []}
    if plugin == "files":
        allow["paths"] = list(options.get("paths", []))
        allow["restore_roots"] = [target] if target and target != "/" else []
    elif plugin in ("postgresql", "mysql"):
        # Entries pin the connection: PLUGIN:NAME[@HOST[:PORT]], IPv6 in brackets.
        host, port = options.get("host"), options.get("port")
        where = "" if host is None else f"@[{host}]" if ":" in host and "[" not in host else f"@{host}"
        where += "" if host is None or port is None else f":{port}"
        allow["databases"] = [f"{plugin}:{options.get('database')}{where}"] + (
            [f"{plugin}:{target}{where}"] if target else []
        )
    elif plugin == "command":
        programs = [options.get(key, [""])[0] for key in ("backup_argv", "restore_argv")]
        allow["commands"] = [p for p in programs if p.startswith("/")]
    return AllowList.from_json(allow)


def execute(job: dict[str, Any], allow: AllowList | None = None, **config_overrides: Any) -> dict[str, Any]:
    """Run one job as the agent would, minus the portal; returns the `complete` body.

    `allow` defaults to the allow-list this job needs (allow_for).
    """
    cfg = config(allow=allow_for(job) if allow is None else allow, **config_overrides)
    return Executor(cfg).execute(job, new_context(job, cfg), Progress())


def succeeded(report: dict[str, Any]) -> dict[str, Any]:
    assert report["status"] == "succeeded", report.get("error")
    return report


def agent_for(portal_url: str, spool_dir: Path, *jobs: dict, **overrides) -> Agent:
    """An agent whose allow-list grants what `jobs` need (and nothing when there are none)."""
    allow = AllowList()
    for job in jobs:
        allow = allow.added(allow_for(job))
    return Agent(config(server=portal_url, spool_dir=str(spool_dir), allow=allow, **overrides))


# --- incremental backups and chains (protocol 4) ---------------------------------------


def point_ref(report: dict[str, Any], point_id: int) -> dict[str, Any]:
    """The object the portal sends for a point it recorded from ``report``: a restore's ``backup``,
    a backup's ``base`` or a ``chain`` member (with its level and its index.bpi record)."""
    index = report.get("index")
    return {
        **backup_ref(report),
        "id": point_id,
        "level": report.get("level", "full"),
        "index": {"sha256": index["sha256"], "size": index["size"]} if index else None,
    }


class Points:
    """One client's files backups as the portal plans them: a full, then incrementals on the newest point.

    Point ``n`` has the id ``n + 1``; ``chain(n)`` is what the portal sends with a restore of it.
    """

    #: Files changed this close before a backup are taken again by the next one (the agent's
    #: "racy" rule, plugins/_incremental.py): the tests' edits settle first, so that counts are exact.
    SETTLE = 0.12

    def __init__(self, options: dict[str, Any], root: Path, compression: str = "none") -> None:
        self.options = options
        self.root = root
        self.compression = compression
        self.reports: list[dict[str, Any]] = []

    def job(self, level: str = "incremental") -> dict[str, Any]:
        job = backup_job("files", self.options, self.root, self.compression)
        job["level"] = level if self.reports else "full"
        job["level_reason"] = ""
        job["base"] = self.ref(len(self.reports) - 1) if job["level"] == "incremental" else None
        return job

    def backup(self, level: str = "incremental", job: dict[str, Any] | None = None) -> dict[str, Any]:
        time.sleep(self.SETTLE)
        report = succeeded(execute(job if job is not None else self.job(level)))
        self.reports.append(report)
        return report

    def ref(self, n: int) -> dict[str, Any]:
        return point_ref(self.reports[n], n + 1)

    def chain(self, n: int) -> list[dict[str, Any]]:
        """The bases of point ``n``, oldest first, found through the reports' ``base`` ids."""
        members: list[dict[str, Any]] = []
        base = self.reports[n].get("base")
        while base is not None:
            members.insert(0, self.ref(base - 1))
            base = self.reports[base - 1].get("base")
        return members

    def restore_job(
        self, n: int, target: Path, *, paths: list[str] | None = None, overwrite: bool = False
    ) -> dict[str, Any]:
        job = restore_job("files", self.options, self.root, self.ref(n), str(target), overwrite)
        job["chain"] = self.chain(n)
        if paths is not None:
            job["target"]["paths"] = paths
        return job

    def restore_test_job(self, n: int) -> dict[str, Any]:
        job = other_job("restore_test", "files", self.options, self.root, self.ref(n))
        job["chain"] = self.chain(n)
        return job

    def location(self, n: int) -> Path:
        return self.root / self.reports[n]["location"]


def snapshot(top: Path) -> dict[bytes, tuple]:
    """Every entry under ``top`` (``top`` itself as b"."): what a restore must give back exactly.

    Type, permission bits, mtime in ns (not for symlinks, whose times no restore sets),
    content SHA-256 or link target, and for a file with more names the first of its names
    (hard-link identity).
    """
    entries: dict[bytes, tuple] = {}
    first_name: dict[int, bytes] = {}
    base = os.fsencode(top)
    for folder, dirs, names in os.walk(base):
        dirs.sort()
        for name in [b".", *sorted(dirs + names)] if folder == base else sorted(dirs + names):
            path = os.path.normpath(os.path.join(folder, name))
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("d", mode, st.st_mtime_ns)
            else:
                with open(path, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                group = first_name.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None
                entries[rel] = ("-", mode, st.st_mtime_ns, digest, group)
    return entries


def assert_same_tree(expected: dict[bytes, tuple], actual: dict[bytes, tuple]) -> None:
    """Two snapshots are equal, entry for entry; times within a microsecond (tar keeps them as a float)."""
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    assert not missing and not extra, f"missing {missing[:10]}, extra {extra[:10]}"
    for path, want in expected.items():
        got = actual[path]
        if want[0] in ("d", "-"):
            assert abs(got[2] - want[2]) <= 1000, (path, got, want)
            got, want = got[:2] + got[3:], want[:2] + want[3:]
        assert got == want, path
