"""Filesystem protection storage: writes a backup folder, verifies and reads it back.

Layout (docs/agent-protocol.md):

    <root>/<application>/<client>/job-<id>/data.<ext>[.gz]
                                          /index.bpi      (the recovery point's index)
                                          /manifest.json

A backup is written into `.partial-job-<id>` next to its final name and renamed
only after the data and manifest are fsynced, so a folder named `job-<id>` is
always complete. Everything streams in 1 MiB chunks: memory use does not
depend on the size of the backup.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backup_agent.errors import ChecksumMismatch, InvalidOptions, StorageError
from backup_agent.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)

CHUNK = 1 << 20
COMPRESSIONS = ("none", "gzip")
MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".partial-"
# Folder names we create or accept: no dot first (hides ".." and ".partial-"), no slashes.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_JOB_DIR = re.compile(r"^job-[0-9]+$")
_DATA_FILE = re.compile(r"^data\.(tar|dump|sql|bin)(\.gz)?$")
# Files written beside the data (backup_agent/file_index.py's index.bpi): metadata, never data.
_SIDE_FILE = re.compile(r"^index\.bpi$")
_GZIP_LEVEL = 6  # zlib's default: most of the ratio of level 9 at a fraction of the CPU

OnChunk = Callable[[int], None]


@dataclass(frozen=True)
class StoredData:
    """What was written: the facts the portal records for a backup."""

    data_file: str
    size: int  # bytes the plugin produced
    stored_size: int  # bytes on storage (after compression)
    sha256: str  # of the stored bytes, so it can be checked without decompressing
    compression: str


class FilesystemStorage:
    """A storage root mounted on this server (local folder or NFS share)."""

    def __init__(self, root: str, compression: str = "none") -> None:
        if not root or not os.path.isabs(root):
            raise InvalidOptions(f"storage root must be an absolute path, got {root!r}")
        if compression not in COMPRESSIONS:
            raise InvalidOptions(f"unknown compression {compression!r}")
        self.root = Path(root)
        self.compression = compression

    @classmethod
    def from_job(cls, spec: dict[str, Any] | None) -> FilesystemStorage:
        spec = spec or {}
        if spec.get("kind") != "filesystem":
            raise InvalidOptions(f"storage kind {spec.get('kind')!r} is not supported by this agent")
        return cls(str(spec.get("root") or ""), str(spec.get("compression") or "none"))

    def job_dir(self, location: str) -> Path:
        """The folder for a relative location, refusing anything that could leave the root.

        Checked twice: lexically (no absolute path, no '..', no hidden names) and
        after resolving symlinks, so a symlinked application folder pointing
        elsewhere cannot redirect writes or deletes.
        """
        if not isinstance(location, str) or not location or location.startswith("/") or "\\" in location:
            raise InvalidOptions(f"storage location must be relative, got {location!r}")
        segments = location.split("/")
        if not all(_SEGMENT.match(s) for s in segments) or not _JOB_DIR.match(segments[-1]):
            raise InvalidOptions(f"storage location {location!r} is not <application>/<client>/job-<id>")
        root = os.path.realpath(self.root)
        path = os.path.realpath(os.path.join(root, *segments))
        if not path.startswith(root + os.sep):
            raise InvalidOptions(f"storage location {location!r} escapes the storage root")
        return Path(path)

    def partial_dir(self, destination: str) -> Path:
        """Where a backup to `destination` is staged before its final rename."""
        final = self.job_dir(destination)
        return final.with_name(PARTIAL_PREFIX + final.name)

    def open_writer(self, destination: str, data_name: str, on_chunk: OnChunk | None = None) -> BackupWriter:
        if not _DATA_FILE.match(data_name):
            raise InvalidOptions(f"bad data file name {data_name!r}")
        if not self.root.is_dir():
            raise StorageError(f"storage root {self.root} is not mounted here (not found)")
        if self.compression == "gzip":
            data_name += ".gz"
        return BackupWriter(self.job_dir(destination), data_name, self.compression, on_chunk)

    def locate(self, location: str) -> tuple[Path, str]:
        """The data file of a complete backup folder and its compression."""
        folder = self.job_dir(location)
        if not folder.is_dir():
            raise StorageError(f"backup folder not found: {folder}")
        names = [p.name for p in folder.iterdir() if _DATA_FILE.match(p.name)]
        if len(names) != 1:
            raise StorageError(f"backup folder {folder} holds {len(names)} data files, expected 1")
        return folder / names[0], "gzip" if names[0].endswith(".gz") else "none"

    def read_manifest(self, location: str) -> dict[str, Any]:
        try:
            data = json.loads((self.job_dir(location) / MANIFEST).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StorageError(f"manifest of {location} is not valid JSON: {exc}") from None
        return data if isinstance(data, dict) else {}

    def verify(
        self, location: str, sha256: str, on_chunk: OnChunk | None = None, *, label: str | None = None
    ) -> tuple[Path, str]:
        """Hash the stored file end to end; raise ChecksumMismatch unless it matches.

        Called before a restore touches its target: a damaged backup must
        fail here, not half-way through overwriting something. ``label`` goes
        before the path in the message (a chain restore names the member).
        """
        path, compression = self.locate(location)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                if on_chunk:
                    on_chunk(len(chunk))
        if digest.hexdigest() != (sha256 or "").lower():
            raise ChecksumMismatch(f"{label} ({path})" if label else str(path), sha256, digest.hexdigest())
        return path, compression

    def open_side_file(self, location: str, name: str, sha256: str, size: int) -> BinaryIO:
        """A file beside a complete backup's data (its index), opened and checked whole.

        ChecksumMismatch when it is missing or its size or SHA-256 is not the recorded
        one. The caller reads through the returned file, so it reads the very bytes
        that were checked, whatever happens to the name meanwhile.
        """
        if not _SIDE_FILE.match(name):
            raise InvalidOptions(f"bad side file name {name!r}")
        path = self.job_dir(location) / name
        try:
            # O_NONBLOCK: a FIFO planted under the name must not hang the job at open().
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ChecksumMismatch(f"{path} is missing", sha256, "no file") from None
        fh = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                # Refused before reading: a device or a huge file is never hashed.
                raise ChecksumMismatch(f"{path} is not a file of the recorded {size} bytes", sha256, "other")
            digest = hashlib.sha256()
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
            found = digest.hexdigest()
            if fh.tell() != size:
                raise ChecksumMismatch(f"{path} holds {fh.tell()} bytes, recorded {size}", sha256, found)
            if found != (sha256 or "").lower():
                raise ChecksumMismatch(str(path), sha256, found)
        except BaseException:
            fh.close()
            raise
        return fh

    def open_reader(
        self, path: Path, compression: str, sha256: str, on_chunk: OnChunk | None = None
    ) -> RestoreReader:
        return RestoreReader(path, compression, sha256, on_chunk)

    def expire(self, location: str) -> bool:
        """Delete one backup folder (and a leftover partial of it). False if already gone."""
        folder = self.job_dir(location)
        shutil.rmtree(folder.parent / (PARTIAL_PREFIX + folder.name), ignore_errors=True)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        fsync_dir(folder.parent)
        return True


class BackupWriter:
    """A file-like sink: compresses, hashes and writes what a plugin produces.

    Use as a context manager and call `commit()` inside it; leaving the block
    without a commit (an exception, a cancel) removes the partial folder.
    """

    def __init__(self, final: Path, data_name: str, compression: str, on_chunk: OnChunk | None) -> None:
        self.final = final
        self.partial = final.with_name(PARTIAL_PREFIX + final.name)
        self.data_name = data_name
        self.compression = compression
        self.size = 0
        self.stored_size = 0
        self._on_chunk = on_chunk
        self._sha = hashlib.sha256()
        self._zip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31) if compression == "gzip" else None
        self._committed = False
        self._side: list[BinaryIO] = []
        # A previous attempt of this job may have died half-way; its leftovers are garbage.
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(mode=0o750, parents=True)
        fd = os.open(self.partial / data_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._fh = os.fdopen(fd, "wb", buffering=CHUNK)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self._on_chunk:
            self._on_chunk(n)  # may raise Cancelled: stop before writing more
        self.size += n
        self._store(self._zip.compress(data) if self._zip else data)
        return n

    def flush(self) -> None:
        """tarfile calls flush(); data is flushed and fsynced once, in finish()."""

    def _store(self, out: bytes | bytearray | memoryview) -> None:
        if out:
            self._sha.update(out)
            self._fh.write(out)
            self.stored_size += len(out)

    def open_side_file(self, name: str) -> BinaryIO:
        """A file beside the data (the index), written by the caller; commit() makes it durable.

        Created in the partial folder, so it is renamed into place with the data
        and removed with it by abort().
        """
        if not _SIDE_FILE.match(name) or name == self.data_name:
            raise InvalidOptions(f"bad side file name {name!r}")
        fd = os.open(self.partial / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        fh = os.fdopen(fd, "wb", buffering=CHUNK)
        self._side.append(fh)
        return fh

    def finish(self) -> StoredData:
        """Close the data file durably and return its size and checksum."""
        if self._zip:
            self._store(self._zip.flush())
            self._zip = None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return StoredData(
            self.data_name, self.size, self.stored_size, self._sha.hexdigest(), self.compression
        )

    def commit(self, manifest: dict[str, Any]) -> None:
        """Make the side files durable, write the manifest, then show the folder under its final name."""
        for fh in self._side:
            if not fh.closed:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        write_atomic(self.partial / MANIFEST, text.encode("utf-8"), 0o640)
        fsync_dir(self.partial)
        if self.final.exists():
            # An earlier attempt of this job finished but lost its lease; the
            # portal never recorded it, so this attempt's copy replaces it.
            stale = self.final.with_name(f".stale-{self.final.name}-{secrets.token_hex(4)}")
            os.rename(self.final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(self.partial, self.final)
        fsync_dir(self.final.parent)
        self._committed = True

    def abort(self) -> None:
        """Drop the partial folder whatever state the file is in; never raises.

        On a full disk, closing the file fails again (ENOSPC while flushing its
        buffer): that must not stop the folder from being removed, nor replace
        the job's own error. The buffered bytes are simply lost with the file.
        """
        for fh in (self._fh, *self._side):
            if not fh.closed:
                try:
                    fh.close()  # closes the descriptor even when the flush fails
                except OSError as exc:
                    log.debug("closing %s failed while aborting: %s", self.partial, exc)
        try:
            shutil.rmtree(self.partial)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Left for the agent's sweep (backup_agent/state.py), which retries it.
            log.warning("could not remove partial backup %s: %s", self.partial, exc)


class _HashingFile:
    """Reads the raw stored file and hashes exactly the bytes read."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by RestoreReader.close
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.sha.update(data)
        return data

    def close(self) -> None:
        self._fh.close()


class RestoreReader:
    """A file-like source of a backup's plugin bytes (decompressed when gzip).

    It hashes the stored bytes again as it reads them; `finish()` checks that
    the data did not change between the verification pass and the restore.
    """

    def __init__(self, path: Path, compression: str, sha256: str, on_chunk: OnChunk | None) -> None:
        self.path = path
        self.expected = (sha256 or "").lower()
        self.bytes_read = 0
        self._raw = _HashingFile(path)
        self._on_chunk = on_chunk
        self._stream: Any = self._raw
        if compression == "gzip":
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")  # type: ignore[arg-type]

    def __enter__(self) -> RestoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, n: int = -1) -> bytes:
        # "Read everything" is never wanted here: it would hold a whole backup
        # in memory. A caller asking for it gets the next chunk instead.
        data = self._stream.read(CHUNK if n is None or n < 0 else n)
        if data and self._on_chunk:
            self._on_chunk(len(data))
        self.bytes_read += len(data)
        return data

    def finish(self) -> None:
        """Read what the consumer left (tar padding, trailing bytes) and re-check the hash."""
        while self._stream.read(CHUNK):
            pass
        while self._raw.read(CHUNK):
            pass
        actual = self._raw.sha.hexdigest()
        if actual != self.expected:
            raise ChecksumMismatch(f"{self.path} changed during the restore", self.expected, actual)

    def close(self) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.close()
