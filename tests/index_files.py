"""Real recovery-point file lists for tests, written by the agent's own writer (backup_agent/file_index.py).

A plain module, not a test module: the file-list tests of the API, the agent API and
the restore workflow build their indexes with it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import deque
from pathlib import Path

from backup_agent.file_index import DIRECTORY, FILE, HARDLINK, SYMLINK, TRAILER, IndexWriter
from catalog.models import Backup, Job
from catalog.services import file_lists, jobs

#: 2026-01-02T03:04:05Z, every entry's mtime unless the tree says otherwise.
MTIME = 1767323045


def write_files_index(path: Path, tree: dict, *, mtime: int = MTIME, version: int = 1) -> dict:
    """Write the file list of a files backup to ``path``; returns the summary a report carries.

    ``tree`` maps names (text, or bytes for names that are not UTF-8) to a dict (a
    folder), an int (a file of that size), a ``(size, mtime)`` pair, ``("->", target)``
    (a symlink) or ``("=>", "srv/app/x")`` (a hard link to another name, relative to /
    as tar stores it). The top level's names are the backed-up paths relative to /
    ("srv/app"), as the files plugin writes them. ``version``: the index format (1, as
    points taken before incrementals hold; 2, as the agent writes now).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        writer = IndexWriter(out, "files", version=version)
        pending: deque[tuple[int | None, dict]] = deque([(None, tree)])
        while pending:
            folder, children = pending.popleft()
            writer.begin_run(folder)
            # Sorted by the names' bytes, as the files plugin lists a folder.
            for raw, value in sorted((_raw(name), value) for name, value in children.items()):
                if isinstance(value, dict):
                    number = writer.add(raw, DIRECTORY, 0o755, 0, mtime)
                    pending.append((number, value))
                elif isinstance(value, tuple) and value[0] == "->":
                    writer.add(raw, SYMLINK, 0o777, 0, mtime, value[1].encode())
                elif isinstance(value, tuple) and value[0] == "=>":
                    writer.add(raw, HARDLINK, 0o644, 0, mtime, value[1].encode())
                elif isinstance(value, tuple):
                    writer.add(raw, FILE, 0o644, value[0], value[1])
                else:
                    writer.add(raw, FILE, 0o644, value, mtime)
        return writer.close()


def _raw(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def write_database_index(path: Path, kind: str, objects: list[dict]) -> dict:
    """A database dump's file list: its table of contents (``{"schema"?, "name", "type", "rows"?}``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        writer = IndexWriter(out, kind, version=1)
        return writer.close({"database": "orders", "objects": objects})


def give_file_list(backup: Backup, tree: dict | None = None, *, kind: str = "files", objects=None) -> dict:
    """Put a file list in place for ``backup`` as a completed upload would, and record it on the row."""
    target = file_lists.index_file(backup.job_id)
    if kind == "files":
        summary = write_files_index(target, tree or {})
    else:
        summary = write_database_index(target, kind, objects or [])
    backup.index_entries = summary["entries"]
    backup.index_kind = summary["kind"]
    backup.index_size_bytes = summary["size"]
    backup.index_sha256 = summary["sha256"]
    backup.save(update_fields=["index_entries", "index_kind", "index_size_bytes", "index_sha256"])
    return summary


#: A small web shop: /srv/webshop with media, an implied /srv above it, and /etc/nginx beside it.
WEBSHOP = {
    "srv/webshop": {
        "media": {
            "invoice-2026-01.pdf": 1200,
            "invoice-2026-02.pdf": 1300,
            "logo.png": 4096,
        },
        "app.py": 512,
        "current": ("->", "releases/42"),
    },
    "etc/nginx": {"nginx.conf": 900},
}


def write_lying_index(path: Path) -> dict:
    """A file list that opens but does not hold together, as a taken-over agent could send one.

    Its footer promises 5,000 entries and a top-level folder of 5,000 children; its one
    block holds two. Returns the summary a report would carry.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        writer = IndexWriter(out, "files", version=1)
        writer.begin_run(None)
        folder = writer.add(b"srv", DIRECTORY, 0o755, 0, MTIME)
        writer.begin_run(folder)
        writer.add(b"secret.txt", FILE, 0o644, 1, MTIME)
        writer.end_run()
        writer._runs[2][0] = 5_000  # the top level's children
        writer.close()
    data = path.read_bytes()
    offset, length, end = TRAILER.unpack(data[-TRAILER.size :])
    footer = zlib.decompress(data[offset : offset + length])
    meta_at = footer.rindex(b"{")
    meta = {**json.loads(footer[meta_at:]), "entries": 5_000}
    footer = zlib.compress(footer[:meta_at] + json.dumps(meta).encode())
    data = data[:offset] + footer + TRAILER.pack(offset, len(footer), end)
    path.write_bytes(data)
    return {"format": 1, "kind": "files", "entries": 5_000, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


# --- the agent's side of the upload, through the agent API ---------------------------


def upload(api, job: Job, body: bytes, sha: str | None = None):
    """The agent's PUT of a backup's file list (``sha``: what X-Index-SHA256 claims)."""
    return api.put(
        f"/api/agent/v1/jobs/{job.pk}/index",
        data=body,
        content_type="application/octet-stream",
        HTTP_X_INDEX_SHA256=sha if sha is not None else hashlib.sha256(body).hexdigest(),
    )


def complete(api, job: Job, **extra):
    """The agent's report of a finished backup (``index=`` the file list it announces)."""
    report = {
        "status": "succeeded",
        "protocol": 3,
        "size": 4,
        "stored_size": 4,
        "location": jobs.backup_destination(job),
        "sha256": hashlib.sha256(b"data").hexdigest(),
        "compression": "none",
        "manifest": {"files": 9},
        "log_tail": "done",
        **extra,
    }
    return api.post(f"/api/agent/v1/jobs/{job.pk}/complete", report, format="json")
