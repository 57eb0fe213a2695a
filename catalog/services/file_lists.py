"""Recovery points' file lists: where they live, browsing, searching, checking a selection.

One compressed file per recovery point under ``PORTAL_INDEX_ROOT``, uploaded by
the agent with its completion report (docs/file-index.md); never a database row
per file. Views, API and the restore workflow call these functions; tenancy is
the caller's (they receive a backup or client the actor may already see).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.errors import InvalidPath, NoFileList
from catalog.file_index import (
    Entry,
    FileIndex,
    IndexError_,
    NotAFolder,
    NotFound,
    name_pattern,
    normal_path,
    open_index,
    path_bytes,
    path_text,
)
from catalog.models import Backup, BackupClient, BackupStatus

log = logging.getLogger(__name__)

NO_FILE_LIST = (
    "This recovery point has no file list (taken before file lists existed, or its plugin makes none): "
    "it can be restored whole."
)
#: The most paths one selective restore may name (the agent's limit too).
MAX_SELECTION = 1000
#: The most matching paths a search returns: past that, narrow the pattern.
MAX_MATCHES = 1000


def index_file(job_id: int) -> Path:
    """Where the file list of the backup made by job ``job_id`` lives (10,000 per folder)."""
    return Path(settings.PORTAL_INDEX_ROOT) / f"{job_id // 10_000:05d}" / f"job-{job_id}.bpi"


def incoming_folder() -> Path:
    return Path(settings.PORTAL_INDEX_ROOT) / "incoming"


def incoming_file(job_id: int, sha256: str) -> Path:
    """Where an upload waits for its job's completion report."""
    return incoming_folder() / f"job-{job_id}-{sha256}.bpi"


@contextlib.contextmanager
def _read(backup: Backup) -> Iterator[FileIndex]:
    """The backup's file list, for one reading; a file list found damaged on the way is NoFileList.

    The agent wrote it, and a taken-over agent can write anything that opens: the reader
    raises IndexError_ for what does not hold together, never a 500.
    """
    index = file_list(backup)
    try:
        yield index
    except IndexError_ as exc:
        log.error("File list of backup %s is damaged: %s", backup.pk, exc)
        raise NoFileList(f"The file list of this recovery point cannot be read ({exc}).") from None


def file_list(backup: Backup) -> FileIndex:
    """The backup's file list, opened; NoFileList when it has none or the file is unreadable."""
    if backup.index_entries is None:
        raise NoFileList(NO_FILE_LIST)
    try:
        return open_index(index_file(backup.job_id))
    except (OSError, IndexError_) as exc:
        log.error("File list of backup %s is unreadable: %s", backup.pk, exc)
        raise NoFileList(f"The file list of this recovery point cannot be read ({exc}).") from None


def remove_file_list(job_id: int) -> None:
    """Remove a file list with its recovery point; already gone is fine."""
    _remove(index_file(job_id))


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def place_upload(job_id: int, sha256: str, size: int) -> bool:
    """Put job ``job_id``'s uploaded file list where its backup's is read from; False if there is none.

    The upload (``incoming_file``, catalog/agent_api/views.py) is hard-linked into place and
    removed only after the caller's transaction commits: a rollback leaves it for the agent's
    next report and, at worst, a stray file, never a backup pointing at nothing.
    """
    incoming = incoming_file(job_id, sha256)
    target = index_file(job_id)
    try:
        if incoming.stat().st_size != size:
            log.warning("Job %s: the uploaded file list is not the size reported; not attached.", job_id)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f"{target.name}.{os.getpid()}.linking")
        _remove(staged)
        try:
            os.link(incoming, staged)
        except FileNotFoundError:
            raise
        except OSError:  # a file system without hard links: move it (a rollback then loses the upload)
            os.replace(incoming, target)
        else:
            os.replace(staged, target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.error("Job %s: cannot put its file list in place: %s", job_id, exc)
        return False
    transaction.on_commit(lambda: _remove(incoming))
    return True


#: An uploaded file list whose job never reported is removed after this long.
INCOMING_MAX_AGE = timedelta(hours=24)


def purge_incoming(*, now: datetime | None = None, max_age: timedelta = INCOMING_MAX_AGE) -> int:
    """Remove uploaded file lists (and broken-off uploads) that waited longer than ``max_age``.

    An upload waits for its job's completion report, which puts it in place
    (``place_upload``); one still there a day later belongs to a job that never
    completed. Returns how many files were removed.
    """
    cutoff = ((now or timezone.now()) - max_age).timestamp()
    removed = 0
    try:
        entries = list(os.scandir(incoming_folder()))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        except OSError:
            continue
    return removed


# --- browsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    path: str  # the folder, as text ("/" or "/srv/app")
    total: int  # children in all
    entries: list[Entry]
    crumbs: list[tuple[str, str]]  # (name, path) from / down to the folder


def _rel(path: str) -> bytes:
    try:
        return normal_path(path)
    except ValueError as exc:
        raise InvalidPath(str(exc)) from None


def crumbs_of(rel: bytes) -> list[tuple[str, str]]:
    crumbs = [("/", "/")]
    parts = rel.split(b"/") if rel else []
    for i, part in enumerate(parts):
        crumbs.append((path_text(part), "/" + path_text(b"/".join(parts[: i + 1]))))
    return crumbs


def list_folder(backup: Backup, path: str, *, offset: int = 0, limit: int = 100) -> Listing:
    """A page of the folder at ``path`` in ``backup``; InvalidPath when it is not a folder there."""
    rel = _rel(path)
    try:
        with _read(backup) as index:
            total, entries = index.listdir(rel, offset, limit)
    except NotFound:
        raise InvalidPath(f"{path} is not in this recovery point.") from None
    except NotAFolder:
        raise InvalidPath(f"{path} is a file, not a folder.") from None
    return Listing(path="/" + path_text(rel), total=total, entries=entries, crumbs=crumbs_of(rel))


# --- searching ----------------------------------------------------------------------------


@dataclass
class Version:
    """One distinct state of a path (type, size, time), in the newest point that holds it."""

    backup_id: int
    taken_at: datetime
    entry: Entry
    points: int = 1  # how many retained points hold this same version


@dataclass
class FileVersions:
    path: str
    versions: list[Version] = field(default_factory=list)  # newest first


def find_versions(client: BackupClient, name: str) -> tuple[list[FileVersions], bool]:
    """Paths whose name matches ``name`` (glob, or text contained) in the client's retained points.

    Returns (paths sorted by path, each with its versions newest first; whether the search
    stopped at MAX_MATCHES). One version is one run of consecutive points holding the path
    unchanged: a file deleted and put back as it was is two versions. Points without a
    file list are skipped.
    """
    try:
        pattern = name_pattern(name)
    except ValueError as exc:
        raise InvalidPath(str(exc)) from None
    backups = (
        Backup.objects.filter(client=client, status=BackupStatus.AVAILABLE, index_entries__isnull=False)
        .order_by("-taken_at", "-pk")
        .only("pk", "job_id", "taken_at", "index_entries")
    )
    found: dict[str, FileVersions] = {}
    seen_in: dict[str, int] = {}  # path → the position of the last point (newest first) holding it
    truncated = False
    position = 0
    for backup in backups:
        try:
            with _read(backup) as index:
                matches = list(index.search(pattern, MAX_MATCHES + 1))
        except NoFileList:
            continue
        position += 1
        for entry in matches:
            versions = found.get(entry.path)
            if versions is None:
                if len(found) >= MAX_MATCHES:
                    truncated = True
                    continue
                versions = found[entry.path] = FileVersions(entry.path)
            last = versions.versions[-1] if versions.versions else None
            unchanged = last is not None and (last.entry.type, last.entry.size, last.entry.mtime) == (
                entry.type,
                entry.size,
                entry.mtime,
            )
            if unchanged and seen_in[entry.path] == position - 1:
                last.points += 1  # the same version in the next older point
            else:
                versions.versions.append(Version(backup.pk, backup.taken_at, entry))
            seen_in[entry.path] = position
    return sorted(found.values(), key=lambda v: v.path), truncated


# --- selective restore ----------------------------------------------------------------------


def check_selection(backup: Backup, paths: list) -> list[str]:
    """A restore's ``paths``, checked against the backup's file list and normalised.

    Each must be in the recovery point (InvalidPath otherwise, naming it); duplicates and
    paths inside another selected folder are dropped. For a database, only tables and
    other objects (not schemas) can be chosen. An empty list means everything.
    """
    if not paths:
        return []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InvalidPath("Give paths as a list of absolute paths.")
    if len(paths) > MAX_SELECTION:
        raise InvalidPath(f"Choose at most {MAX_SELECTION} paths, or restore the whole recovery point.")
    chosen: dict[bytes, str] = {}
    hard_links: list[tuple[str, str]] = []
    with _read(backup) as index:
        for path in paths:
            rel = _rel(path)
            if not rel:
                raise InvalidPath("To restore everything, leave the selection empty.")
            try:
                entry = index.entry_at(rel)
            except NotFound:
                raise InvalidPath(f"{path} is not in this recovery point.") from None
            if index.objects is not None and entry is None:
                raise InvalidPath(f"{path} is a schema: choose its tables.")
            chosen[rel] = "/" + path_text(rel)
            if entry is not None and entry.type == "hardlink" and entry.link is not None:
                hard_links.append((chosen[rel], entry.link))
    for path, target in hard_links:
        # The stream holds a hard link's data at its first name only, which the agent
        # must extract too: say so now rather than fail the restore at 2 a.m.
        target_rel = path_bytes(target).strip(b"/")
        if not any(target_rel == rel or target_rel.startswith(rel + b"/") for rel in chosen):
            raise InvalidPath(f"{path} is a hard link to /{target}: select that file too.")
    if index.kind == "postgresql" and len({rel.split(b"/", 1)[0] for rel in chosen}) > 1:
        raise InvalidPath("Choose tables from one schema per restore.")
    kept = [
        text
        for rel, text in sorted(chosen.items())
        if not any(rel.startswith(other + b"/") for other in chosen if other != rel)
    ]
    return kept
