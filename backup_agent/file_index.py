"""The recovery-point index: what a backup holds, written while the backup streams.

One file per recovery point, ``index.bpi`` beside the archive on protection
storage; the portal keeps a copy to browse and search (catalog/file_index.py
reads it through ``IndexReader``; docs/file-index.md is the format). Memory
stays flat: entries are buffered one block at a time, compressed and written
out, and read back one block at a time.

Entries come in *runs*: the files plugin writes every folder's children one
after the other (backup_agent/plugins/files.py), so one run is one folder's
listing and the footer says where each run starts. A listing then reads one
or two blocks, never the whole file.

Format 2 adds what an incremental backup compares a file with (mtime's
nanoseconds, ctime, inode) and where a file's data lives in its chain
(``origin``); format 1 files, written before incrementals, stay readable.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import struct
import sys
import threading
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, BinaryIO

FILE_NAME = "index.bpi"
FORMAT = 2
MAGICS = {1: b"BPIDX\x00\x01\n", 2: b"BPIDX\x00\x02\n"}
MAGIC = MAGICS[FORMAT]
TRAILER = struct.Struct("<QQ8s")  # footer offset, footer length, end magic
END_MAGIC = b"BPIDXEND"
BLOCK_HEAD = struct.Struct("<III")  # entries, bytes of names, bytes of link targets
BLOCK_ENTRIES = 4096
NO_DIR = 0xFFFFFFFF  # the run of the top-level entries has no folder entry of its own
_LEVEL = 6
#: Decompressed bytes one footer or block may grow to: a crafted file cannot exhaust memory.
MAX_RAW = 256 << 20
#: The longest chain of incrementals on one full: past it the next backup is a full (origin is a u16,
#: and a restore opens every member in turn).
MAX_CHAIN_DEPTH = 250

# One byte per entry: what `tar -tv` shows as the first letter, hard links as 'h'.
FILE, DIRECTORY, SYMLINK, HARDLINK = b"-", b"d", b"l", b"h"
LINK_TYPES = frozenset((SYMLINK[0], HARDLINK[0]))
# Format 2's columns after the link targets: bytes per entry and array type code.
_EXTRA_COLUMNS = (("mtime_nsec", "I", 4), ("ctime_ns", "q", 8), ("inode", "Q", 8), ("origin", "H", 2))
_EXTRA_WIDTH = sum(width for _, _, width in _EXTRA_COLUMNS)


def _le(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class IndexWriter:
    """Writes entries into ``out`` (a binary file opened for writing) block by block.

    ``level``, ``depth`` and ``chain`` (the data SHA-256 of the bases, oldest first)
    go into the footer's metadata. ``version=1`` writes the format before incrementals
    (tests of old points use it).
    """

    def __init__(
        self,
        out: BinaryIO,
        kind: str,
        *,
        level: str = "full",
        depth: int = 0,
        chain: Sequence[str] = (),
        version: int | None = None,
    ) -> None:
        self.kind = kind
        self.version = FORMAT if version is None else version
        if self.version not in MAGICS:
            raise ValueError(f"no index format {self.version}")
        # Extra keys for the footer's metadata, set by the plugin while it streams
        # (a database dump's table of contents); close() merges them.
        self.meta: dict[str, Any] = {}
        if self.version >= 2:
            self.meta.update(level=level, depth=depth, chain=list(chain))
        self.entries = 0
        self.size = 0
        self._out = out
        self._sha = hashlib.sha256()
        self._blocks = (array("Q"), array("I"), array("I"))  # offset, compressed length, first entry
        self._runs = (array("I"), array("I"), array("I"))  # folder entry, first child, children
        self._run_dir: int | None = None
        self._run_first = 0
        self._reset_block()
        self._write(MAGICS[self.version])

    def _reset_block(self) -> None:
        self._names: list[bytes] = []
        self._types = bytearray()
        self._modes = array("H")
        self._sizes = array("Q")
        self._mtimes = array("q")
        self._links: list[bytes] = []
        self._extra = tuple(array(code) for _, code, _ in _EXTRA_COLUMNS)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._sha.update(data)
        self.size += len(data)

    def begin_run(self, folder_entry: int | None) -> None:
        """The entries added next are the children of ``folder_entry`` (None: the top level)."""
        self.end_run()
        self._run_dir = NO_DIR if folder_entry is None else folder_entry
        self._run_first = self.entries

    def end_run(self) -> None:
        if self._run_dir is not None and self.entries > self._run_first:
            for column, value in zip(
                self._runs, (self._run_dir, self._run_first, self.entries - self._run_first), strict=True
            ):
                column.append(value)
        self._run_dir = None

    def add(
        self,
        name: bytes,
        type_: bytes,
        mode: int,
        size: int,
        mtime: int,
        link: bytes = b"",
        *,
        mtime_nsec: int = 0,
        ctime_ns: int = 0,
        inode: int = 0,
        origin: int = 0,
    ) -> int:
        """Record one entry; returns its number. ``name`` is relative to its folder (top level: to /).

        ``origin``: for a regular file, how many points back its data is stored (0: this one).
        """
        if self._run_dir is None:
            raise RuntimeError("IndexWriter.add outside a run")
        self._names.append(name)
        self._types += type_
        self._modes.append(mode & 0o7777)
        self._sizes.append(max(0, size))
        self._mtimes.append(int(mtime))
        if type_[0] in LINK_TYPES:
            self._links.append(link)
        for column, value in zip(self._extra, (mtime_nsec, ctime_ns, inode, origin), strict=True):
            column.append(value)
        self.entries += 1
        if len(self._names) >= BLOCK_ENTRIES:
            self._flush_block()
        return self.entries - 1

    def _flush_block(self) -> None:
        if not self._names:
            return
        names = b"\0".join(self._names) + b"\0"
        links = b"\0".join(self._links) + b"\0" if self._links else b""
        raw = b"".join(
            (
                BLOCK_HEAD.pack(len(self._names), len(names), len(links)),
                names,
                bytes(self._types),
                _le(self._modes),
                _le(self._sizes),
                _le(self._mtimes),
                links,
                *((_le(column) for column in self._extra) if self.version >= 2 else ()),
            )
        )
        packed = zlib.compress(raw, _LEVEL)
        offsets, lengths, firsts = self._blocks
        offsets.append(self.size)
        lengths.append(len(packed))
        firsts.append(self.entries - len(self._names))
        self._write(packed)
        self._reset_block()

    def close(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the last block and the footer; returns the summary the report carries."""
        self.end_run()
        self._flush_block()
        meta = {**self.meta, **(meta or {})}
        meta.update(format=self.version, kind=self.kind, entries=self.entries)
        footer = zlib.compress(
            b"".join(
                (
                    struct.pack("<I", len(self._blocks[0])),
                    *(_le(column) for column in self._blocks),
                    struct.pack("<I", len(self._runs[0])),
                    *(_le(column) for column in self._runs),
                    json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
                )
            ),
            _LEVEL,
        )
        offset = self.size
        self._write(footer)
        self._write(TRAILER.pack(offset, len(footer), END_MAGIC))
        self._out.flush()
        # What the list shows: a dump's objects (its table of contents), else the entries.
        objects = meta.get("objects")
        return {
            "format": self.version,
            "kind": self.kind,
            "entries": len(objects) if isinstance(objects, list) else self.entries,
            "size": self.size,
            "sha256": self._sha.hexdigest(),
        }


# --- reading ----------------------------------------------------------------------------
# The one parser of the format: the agent reads a base's index (incrementals) and a
# point's (chain restores) with it, the portal browses and searches with it. A file
# written by a taken-over agent must fail here with DamagedIndex, never with a crash or
# a memory blow-up.


class DamagedIndex(Exception):
    """The file is not a readable index (damaged, truncated, or another format)."""


def _column(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def _inflate(data: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, MAX_RAW)
    except zlib.error as exc:
        raise DamagedIndex(f"damaged block: {exc}") from None
    if inflater.unconsumed_tail:
        raise DamagedIndex("a block is larger than any index writes")
    return raw


class Block:
    """One decompressed block; columns are parsed on first use."""

    def __init__(self, raw: bytes, version: int) -> None:
        try:
            self.count, names_len, links_len = BLOCK_HEAD.unpack_from(raw)
        except struct.error:
            raise DamagedIndex("truncated block") from None
        n, at = self.count, BLOCK_HEAD.size
        self.names_blob = raw[at : at + names_len]
        at += names_len
        self.types = raw[at : at + n]
        at += n
        self._raw = raw
        self._spans = ((at, 2 * n), (at + 2 * n, 8 * n), (at + 10 * n, 8 * n))
        links_at = at + 18 * n
        self._links_blob = raw[links_at : links_at + links_len]
        self._extra_at = links_at + links_len if version >= 2 else None
        end = links_at + links_len + (_EXTRA_WIDTH * n if version >= 2 else 0)
        if (
            len(self._links_blob) != links_len
            or len(self.types) != n
            or len(raw) < end
            or self.names_blob.count(b"\0") < n
        ):
            raise DamagedIndex("truncated block")

    @functools.cached_property
    def names(self) -> list[bytes]:
        return self.names_blob.split(b"\0")[: self.count]

    @functools.cached_property
    def columns(self) -> tuple[bytes, array, array, array, dict[int, bytes]]:
        """Types, modes, sizes, mtimes (seconds) and the link target of each link, by position."""
        (m, ml), (s, sl), (t, tl) = self._spans
        links = self._links_blob.split(b"\0")
        link_of = {}
        k = 0
        for i, type_ in enumerate(self.types):
            if type_ in LINK_TYPES:
                link_of[i] = links[k] if k < len(links) else b""
                k += 1
        return (
            self.types,
            _column("H", self._raw[m : m + ml]),
            _column("Q", self._raw[s : s + sl]),
            _column("q", self._raw[t : t + tl]),
            link_of,
        )

    @functools.cached_property
    def extra(self) -> tuple[array, array, array, array] | None:
        """Format 2's mtime_nsec, ctime_ns, inode and origin columns; None in a format 1 block."""
        if self._extra_at is None:
            return None
        at, columns = self._extra_at, []
        for _, code, width in _EXTRA_COLUMNS:
            columns.append(_column(code, self._raw[at : at + width * self.count]))
            at += width * self.count
        return tuple(columns)  # type: ignore[return-value]


class IndexReader:
    """An index file opened for reading: footer, metadata, runs, and blocks through a small LRU.

    ``source`` is a path (opened for each block read, so a reader can be shared between
    threads) or a binary file opened for reading (read with pread; the caller keeps it
    open, e.g. the very file whose SHA-256 it just checked).
    """

    #: Decompressed blocks kept (some 300 KB each): a walk or a restore reads forward, a few suffice.
    BLOCK_CACHE = 4

    def __init__(self, source: str | os.PathLike | BinaryIO, *, block_cache: int | None = None) -> None:
        self._path = None if hasattr(source, "fileno") else os.fspath(source)  # type: ignore[arg-type]
        self._fd = None if self._path is not None else source.fileno()  # type: ignore[union-attr]
        self.block_cache = block_cache or self.BLOCK_CACHE
        if self._path is None:
            self._open()
        else:
            with open(self._path, "rb") as fh:  # one open for the head, the trailer and the footer
                self._fd = fh.fileno()
                try:
                    self._open()
                finally:
                    self._fd = None
        self.kind: str = self.meta.get("kind", "files")
        self.entries: int = int(self.meta.get("entries", 0))
        self._cache: OrderedDict[int, Block] = OrderedDict()
        self._lock = threading.Lock()

    def _open(self) -> None:
        self.file_size = self._size()
        if self.file_size < len(MAGIC) + TRAILER.size:
            raise DamagedIndex("too short to be an index")
        magic = self._read(0, len(MAGIC))
        versions = [version for version, value in MAGICS.items() if value == magic]
        if not versions:
            raise DamagedIndex(f"not an index of format {' or '.join(map(str, MAGICS))}")
        self.format: int = versions[0]
        offset, length, end = TRAILER.unpack(self._read(self.file_size - TRAILER.size, TRAILER.size))
        if end != END_MAGIC or offset + length + TRAILER.size != self.file_size:
            raise DamagedIndex("the footer is damaged")
        self._parse_footer(_inflate(self._read(offset, length)))

    def _size(self) -> int:
        return os.fstat(self._fd).st_size  # type: ignore[arg-type]

    def _read(self, offset: int, length: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        with open(self._path, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(offset)
            return fh.read(length)

    def _parse_footer(self, footer: bytes) -> None:
        try:
            (nblocks,) = struct.unpack_from("<I", footer)
            at = 4
            self.block_offsets = _column("Q", footer[at : at + 8 * nblocks])
            self.block_lengths = _column("I", footer[at + 8 * nblocks : at + 12 * nblocks])
            self.block_firsts = _column("I", footer[at + 12 * nblocks : at + 16 * nblocks])
            at += 16 * nblocks
            (nruns,) = struct.unpack_from("<I", footer, at)
            at += 4
            self.run_dirs = _column("I", footer[at : at + 4 * nruns])
            self.run_firsts = _column("I", footer[at + 4 * nruns : at + 8 * nruns])
            self.run_counts = _column("I", footer[at + 8 * nruns : at + 12 * nruns])
            self.meta: dict[str, Any] = json.loads(footer[at + 12 * nruns :])
        except (struct.error, ValueError, RecursionError) as exc:
            raise DamagedIndex(f"the footer is damaged: {exc}") from None
        if len(self.run_counts) != nruns or len(self.block_firsts) != nblocks:
            raise DamagedIndex("the footer is truncated")
        if not isinstance(self.meta, dict):
            raise DamagedIndex("the footer's metadata is not an object")
        entries, kind = self.meta.get("entries", 0), self.meta.get("kind", "files")
        if type(entries) is not int or entries < 0 or not isinstance(kind, str):
            raise DamagedIndex("the footer's metadata is damaged (entries, kind)")

    # --- blocks and entries ---------------------------------------------------------------

    def block(self, i: int) -> Block:
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        offset, length = self.block_offsets[i], self.block_lengths[i]
        if offset + length > self.file_size:  # read() would allocate all it is asked for first
            raise DamagedIndex(f"block {i} lies outside the file")
        block = Block(_inflate(self._read(offset, length)), self.format)
        with self._lock:
            self._cache[i] = block
            while len(self._cache) > self.block_cache:
                self._cache.popitem(last=False)
        return block

    def locate(self, number: int) -> tuple[Block, int]:
        """The block holding entry ``number`` (0 ≤ number < entries) and its position there."""
        i = bisect.bisect_right(self.block_firsts, number) - 1
        if i < 0:
            raise DamagedIndex(f"entry {number} is in no block")
        block = self.block(i)
        k = number - self.block_firsts[i]
        if k >= block.count:
            # The footer promises an entry no block holds: written by no agent of ours.
            raise DamagedIndex(f"entry {number} is in no block")
        return block, k

    def name(self, number: int) -> bytes:
        block, k = self.locate(number)
        return block.names[k]

    def type(self, number: int) -> int:
        block, k = self.locate(number)
        return block.types[k]

    # --- folders ------------------------------------------------------------------------

    @functools.cached_property
    def _folders(self) -> tuple[array, array]:
        """Folder entry numbers sorted, and their run numbers: 8 bytes a folder, never a dict."""
        order = sorted(range(len(self.run_dirs)), key=self.run_dirs.__getitem__)
        return array("I", (self.run_dirs[run] for run in order)), array("I", order)

    def children(self, folder: int | None) -> range:
        """Entry numbers of a folder's children, in the listing's order (None: the top level)."""
        key = NO_DIR if folder is None else folder
        folders, runs = self._folders
        at = bisect.bisect_left(folders, key)
        if at == len(folders) or folders[at] != key:
            return range(0)
        run = runs[at]
        first = self.run_firsts[run]
        return range(first, first + self.run_counts[run])

    def parent(self, number: int) -> int | None:
        """The folder entry holding entry ``number`` (None: the top level)."""
        run = bisect.bisect_right(self.run_firsts, number) - 1
        if run < 0 or number >= self.run_firsts[run] + self.run_counts[run]:
            raise DamagedIndex(f"entry {number} is in no folder")
        folder = self.run_dirs[run]
        return None if folder == NO_DIR else folder

    def raw_path(self, number: int) -> bytes:
        """An entry's path relative to /, found going up through its folders."""
        parts = []
        current: int | None = number
        for _ in range(4096):  # deeper than any path: a loop means a damaged file
            if current is None:
                return b"/".join(reversed(parts))
            parts.append(self.name(current))
            current = self.parent(current)
        raise DamagedIndex("folder loop")

    def find_child(self, folder: int | None, name: bytes) -> int | None:
        """The child of ``folder`` called ``name``: a binary search, the listing being sorted by bytes."""
        children = self.children(folder)
        lo, hi = children.start, children.stop
        while lo < hi:
            mid = (lo + hi) // 2
            if self.name(mid) < name:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < children.stop and self.name(lo) == name else None

    def lookup(self, rel: bytes) -> int | None:
        """The entry at ``rel`` (bytes relative to /); None when the point holds none there.

        Top-level names are configured paths ("srv/app"): the one that ``rel`` is or lies
        under is found by a scan (they are few), the rest one folder at a time.
        """
        for number in self.children(None):
            top = self.name(number)
            if rel == top:
                return number
            if rel.startswith(top + b"/"):
                current: int | None = number
                for part in rel[len(top) + 1 :].split(b"/"):
                    if current is None or self.type(current) != DIRECTORY[0]:
                        return None
                    current = self.find_child(current, part)
                return current
        return None


# --- path text ------------------------------------------------------------------------
# Paths travel as text (JSON, the catalog, forms) in GNU tar's "escape" quoting, the
# way `tar -tv` prints them: a backslash is "\\", control characters and bytes that
# are not UTF-8 are escapes ("\n", "\377"). Every name round-trips. The portal's reader
# (catalog/file_index.py) imports these and the format's constants from here.

_UNESCAPES = {"\\": 0x5C, "n": 0x0A, "t": 0x09, "r": 0x0D, "v": 0x0B, "f": 0x0C, "b": 0x08, "a": 0x07}
_ESCAPES = {code: "\\" + letter for letter, code in _UNESCAPES.items()}


def path_text(raw: bytes) -> str:
    """Bytes of a path as tar -tv shows them (escaped)."""
    text = raw.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text  # the usual case: nothing to escape
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\{code - 0xDC00:03o}")
        elif code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif not char.isprintable() and char != " ":
            out.extend(f"\\{byte:03o}" for byte in char.encode("utf-8"))
        else:
            out.append(char)
    return "".join(out)


def path_bytes(text: str) -> bytes:
    """The inverse of path_text; ValueError on a malformed escape."""
    if "\\" not in text:
        return text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in _UNESCAPES:
            out.append(_UNESCAPES[nxt])
            i += 2
        elif len(text) >= i + 4 and all(c in "01234567" for c in text[i + 1 : i + 4]):
            value = int(text[i + 1 : i + 4], 8)
            if value > 0xFF:
                raise ValueError(f"escape \\{text[i + 1 : i + 4]} is not a byte")
            out.append(value)
            i += 4
        else:
            raise ValueError(f"unknown escape in path {text!r}")
    return bytes(out)
