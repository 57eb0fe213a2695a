"""What a plugin gets besides its options: cancellation, logging, environment, limits."""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from backup_agent.errors import Cancelled
from backup_agent.file_index import IndexReader, IndexWriter

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 50


class LogTail:
    """The last lines of tool stderr and agent notes, sent to the portal as `log_tail`.

    Bounded, because a chatty tool (pg_restore --verbose, tar warnings) can
    print millions of lines and the agent's memory must stay flat.
    """

    def __init__(self, lines: int = LOG_TAIL_LINES) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        line = line.rstrip("\r\n")[:1000]
        with self._lock:
            self._lines.append(line)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def text(self) -> str:
        return "\n".join(self.lines())


@dataclass
class JobContext:
    """Per-job services handed to a plugin."""

    job_id: int
    client: str
    # Environment for the plugin's tools: this process's environment plus the
    # config's plugin_env section for the plugin (passwords live there).
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "cancelled by the portal"
    log: LogTail = field(default_factory=LogTail)
    tool_timeout: float | None = None
    scratch_dir: str | None = None
    # Set by the allow-list for an in-place files restore: every archive member
    # must land under one of these paths (backup_agent/allow.py, Permit).
    restore_only_under: tuple[str, ...] | None = None
    # Set by the run loop: remembers a staging folder in the state folder
    # (backup_agent/state.py) before it is created, so a crash leaves no orphan.
    record_staging: Callable[[int, Path], None] | None = None
    # Set by the run loop: records a committed backup folder (storage root, relative
    # location) in the state folder (backup_agent/archives.py), for orphan reports.
    record_archive: Callable[[str, str], None] | None = None
    # Set by the executor for a backup: the recovery point's index, which the plugin
    # fills while it streams (backup_agent/file_index.py); None for plugins without one.
    index: IndexWriter | None = None
    # Set by the executor for a selective restore: what to restore, as bytes relative
    # to "/" ("srv/app/invoices/x.pdf" for files, "public/orders" or "orders" for tables).
    # None restores everything.
    selection: tuple[bytes, ...] | None = None
    # Set by the executor for an incremental backup: the base's index, verified against
    # the catalog's record, that the walk compares the tree with.
    base_index: IndexReader | None = None
    # Set by the executor for a restore of an incremental point: its bases, oldest first,
    # each verified and opened only when the plugin gets to it, and the point's own index
    # (verified), which says in which of them each file's data lives.
    chain: tuple[ChainPart, ...] = ()
    point_index: IndexReader | None = None

    def staging(self, folder: Path) -> None:
        """Call right before creating a staging folder; best effort, never fails the job."""
        if self.record_staging is None:
            return
        try:
            self.record_staging(self.job_id, folder)
        except OSError as exc:
            log.warning("job %s: could not record staging folder %s: %s", self.job_id, folder, exc)

    def archived(self, root: str, location: str) -> None:
        """Call right after a backup folder is renamed into place; best effort, never fails the job."""
        if self.record_archive is None:
            return
        try:
            self.record_archive(root, location)
        except OSError as exc:
            log.error("job %s: could not record archive %s in %s: %s", self.job_id, location, root, exc)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(self.cancel_reason)

    def request_cancel(self, reason: str) -> None:
        if not self.cancel.is_set():
            self.cancel_reason = reason
            self.cancel.set()

    def note(self, message: str) -> None:
        """A line for the job's log tail that comes from the agent, not a tool."""
        log.info("job %s: %s", self.job_id, message)
        self.log.add(f"backup-agent: {message}")


@dataclass(frozen=True)
class ChainPart:
    """One base of the incremental point being restored."""

    location: str
    # How many points back from the restored one: its files are those whose index origin says so.
    origin: int
    # The verified stream of its data; the context manager re-checks the SHA-256 when it closes.
    open: Callable[[], AbstractContextManager[Source]]


class Sink(Protocol):
    """Where a plugin writes its backup stream (the storage writer)."""

    def write(self, data: bytes) -> int: ...


class Source(Protocol):
    """Where a plugin reads the stream to restore (the verified storage reader)."""

    def read(self, n: int = -1) -> bytes: ...
