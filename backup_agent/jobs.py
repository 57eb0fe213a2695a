"""A job as the portal hands it out, parsed and checked once (docs/agent-protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backup_agent.errors import InvalidOptions

KINDS = ("backup", "restore", "restore_test", "expire")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_id_of(raw: Any) -> int | None:
    """The id of a raw job, or None when there is nothing to report against."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), int) and not isinstance(raw.get("id"), bool):
        return int(raw["id"])
    return None


@dataclass(frozen=True)
class BackupRef:
    """The recovery point a restore, restore test or expiry works on."""

    id: int | None
    location: str
    sha256: str
    size: int | None
    stored_size: int | None
    compression: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class JobSpec:
    id: int
    kind: str
    attempt: int
    client_id: int | None
    client_name: str
    application: str
    plugin: str
    options: dict[str, Any]
    storage: dict[str, Any]
    destination: str | None = None
    backup: BackupRef | None = None
    target: str | None = None
    overwrite: bool = False
    # A selective restore's paths (tar-escaped text, absolute); empty: everything.
    paths: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse(raw: dict[str, Any]) -> JobSpec:
    """Check the parts each kind needs; InvalidOptions names the first missing one."""
    job_id = job_id_of(raw)
    if job_id is None:
        raise InvalidOptions("job without an integer id")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InvalidOptions(f"job kind {kind!r} is not one of {', '.join(KINDS)}")
    client = raw.get("client") or {}
    if not isinstance(client, dict):
        raise InvalidOptions("job 'client' must be an object")
    spec = JobSpec(
        id=job_id,
        kind=kind,
        attempt=int(raw.get("attempt") or 1),
        client_id=client.get("id"),
        client_name=str(client.get("name") or ""),
        application=str(client.get("application") or ""),
        plugin=str(client.get("plugin") or ""),
        options=client.get("options") or {},
        storage=raw.get("storage") or {},
        destination=raw.get("destination"),
        backup=_backup_ref(raw.get("backup")) if kind != "backup" else None,
        target=_target(raw.get("target"))[0] if kind == "restore" else None,
        overwrite=_target(raw.get("target"))[1] if kind == "restore" else False,
        paths=_paths(raw.get("target")) if kind == "restore" else (),
        raw=raw,
    )
    if kind == "backup" and not isinstance(spec.destination, str):
        raise InvalidOptions("backup job without a 'destination'")
    if kind != "expire" and not spec.plugin:
        raise InvalidOptions("job without client.plugin")
    return spec


def _backup_ref(value: Any) -> BackupRef:
    if not isinstance(value, dict) or not isinstance(value.get("location"), str):
        raise InvalidOptions("job without 'backup.location'")
    return BackupRef(
        id=value.get("id"),
        location=value["location"],
        sha256=str(value.get("sha256") or ""),
        size=value.get("size"),
        stored_size=value.get("stored_size"),
        compression=str(value.get("compression") or "none"),
        manifest=value["manifest"] if isinstance(value.get("manifest"), dict) else {},
    )


def _target(value: Any) -> tuple[str, bool]:
    if not isinstance(value, dict) or not isinstance(value.get("location"), str) or not value["location"]:
        raise InvalidOptions("restore job without 'target.location'")
    overwrite = value.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise InvalidOptions("'target.overwrite' must be true or false")
    return value["location"], overwrite


MAX_PATHS = 1000


def _paths(value: dict[str, Any]) -> tuple[str, ...]:
    """A selective restore's ``target.paths``: absolute, tar-escaped, at most MAX_PATHS."""
    paths = value.get("paths") or []
    if not isinstance(paths, list) or len(paths) > MAX_PATHS:
        raise InvalidOptions(f"'target.paths' must be a list of at most {MAX_PATHS} paths")
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise InvalidOptions(f"'target.paths' holds {path!r}, not an absolute path")
    return tuple(paths)
