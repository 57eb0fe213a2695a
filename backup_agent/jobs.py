"""A job as the portal hands it out, parsed and checked once (docs/agent-protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backup_agent.errors import InvalidOptions

KINDS = ("backup", "restore", "restore_test", "expire")
LEVELS = ("full", "incremental")


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
    # The point's index.bpi as the catalog recorded it ({"sha256", "size"}); None when it has none.
    index: dict[str, Any] | None = None
    level: str = "full"


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
    # A backup: the level the portal planned, the point an incremental builds on, and
    # why a full was planned where the policy takes incrementals ('' otherwise).
    level: str = "full"
    base: BackupRef | None = None
    level_reason: str = ""
    # A restore or restore test of an incremental point: its bases, oldest (the full) first.
    chain: tuple[BackupRef, ...] = ()
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
        level=_level(raw.get("level")) if kind == "backup" else "full",
        # A malformed base is no reason to fail a backup: the executor takes a full instead.
        base=_optional_ref(raw.get("base")) if kind == "backup" else None,
        level_reason=str(raw.get("level_reason") or "") if kind == "backup" else "",
        chain=_chain(raw.get("chain")) if kind in ("restore", "restore_test") else (),
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
        index=_index_ref(value.get("index")),
        level=_level(value.get("level")),
    )


def _level(value: Any) -> str:
    """``full`` or ``incremental``; absent (an older portal) or empty is full."""
    if value is None or value == "":
        return "full"
    if value not in LEVELS:
        raise InvalidOptions(f"level {value!r} is not one of {', '.join(LEVELS)}")
    return str(value)


def _index_ref(value: Any) -> dict[str, Any] | None:
    if (
        isinstance(value, dict)
        and isinstance(value.get("sha256"), str)
        and type(value.get("size")) is int
        and value["size"] >= 0
    ):
        return {"sha256": value["sha256"].lower(), "size": value["size"]}
    return None


def _optional_ref(value: Any) -> BackupRef | None:
    try:
        return _backup_ref(value) if value is not None else None
    except InvalidOptions:
        return None


def _chain(value: Any) -> tuple[BackupRef, ...]:
    """A restore's ``chain``: the point's bases, oldest first; [] or absent for a full."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidOptions("'chain' must be a list of recovery points")
    return tuple(_backup_ref(member) for member in value)


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
