"""The agent the portal serves: built lazily from the portal's own backup_agent/, kept while current.

Built on first use into PORTAL_AGENT_DIST_DIR (default VAR_DIR / "agent"), and again whenever
the hash of backup_agent/*.py (and of the build recipe) differs from the one recorded beside
the artifacts: a deploy that brings new agent code serves the new zipapp without a build step
to forget. The builds are reproducible, so two workers building at once write the same bytes;
a file lock keeps them from doing the work twice, and every file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from agent_dist import build

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_digest: str | None = None  # per process: the source does not change under a running portal


@dataclass(frozen=True)
class Zipapp:
    path: Path
    sha256: str
    version: str


def dist_dir() -> Path:
    return Path(settings.PORTAL_AGENT_DIST_DIR)


def source_digest() -> str:
    global _digest
    if _digest is None:
        _digest = build.source_digest()
    return _digest


def _read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / f".{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


@contextlib.contextmanager
def _built_alone(folder: Path) -> Iterator[None]:
    """One worker at a time builds into ``folder`` (the others wait, then find it built)."""
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _current(manifest: dict, folder: Path, digest: str) -> bool:
    return (
        manifest.get("source") == digest
        and bool(manifest.get("pyz_sha256"))
        and (folder / build.PYZ_NAME).is_file()
    )


def zipapp() -> Zipapp:
    """The current zipapp and its SHA-256, built first if missing or stale."""
    folder = dist_dir()
    digest = source_digest()
    manifest = _read_manifest(folder)
    if not _current(manifest, folder, digest):
        folder.mkdir(parents=True, exist_ok=True)
        with _built_alone(folder):
            manifest = _read_manifest(folder)
            if not _current(manifest, folder, digest):  # another worker may have built it meanwhile
                log.info("building the agent zipapp in %s", folder)
                checksum = build.build_zipapp(folder / build.PYZ_NAME)
                manifest = {"source": digest, "version": build.version(), "pyz_sha256": checksum}
                _write_manifest(folder, manifest)
    return Zipapp(folder / build.PYZ_NAME, manifest["pyz_sha256"], manifest["version"])


def deb() -> Path:
    """The current .deb (built from the current zipapp); BuildError without Debian's dpkg-deb."""
    return deb_with_sha256()[0]


def deb_with_sha256() -> tuple[Path, str]:
    """The current .deb and the SHA-256 of the whole file (recorded in the manifest as ``deb_sha256``)."""
    app = zipapp()
    folder = app.path.parent
    manifest = _read_manifest(folder)
    path = folder / build.deb_name(app.version)
    if manifest.get("deb_for") == app.sha256 and path.is_file() and manifest.get("deb_sha256"):
        return path, manifest["deb_sha256"]
    with _built_alone(folder):
        manifest = _read_manifest(folder)
        if manifest.get("deb_for") != app.sha256 or not path.is_file():
            log.info("building the agent .deb in %s", folder)
            for old in folder.glob("backup-agent_*_all.deb"):
                old.unlink(missing_ok=True)
            build.build_deb(folder, app.path)
            manifest["deb_for"] = app.sha256
            manifest.pop("deb_sha256", None)
        if not manifest.get("deb_sha256"):
            manifest["deb_sha256"] = build.sha256_of(path)
            _write_manifest(folder, manifest)
    return path, manifest["deb_sha256"]
