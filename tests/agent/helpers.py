"""Job payloads as the portal sends them, and a way to run one without a portal."""

from __future__ import annotations

import itertools
import shutil
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
