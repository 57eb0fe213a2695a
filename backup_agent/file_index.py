"""The recovery-point index: what a backup holds, written while the backup streams.

One file per recovery point, ``index.bpi`` beside the archive on protection
storage; the portal keeps a copy to browse and search (catalog/file_index.py
reads it; docs/file-index.md is the format). Memory stays flat: entries are
buffered one block at a time, compressed and written out.

Entries come in *runs*: the files plugin writes every folder's children one
after the other (backup_agent/plugins/files.py), so one run is one folder's
listing and the footer says where each run starts. A listing then reads one
or two blocks, never the whole file.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from array import array
from typing import Any, BinaryIO

FILE_NAME = "index.bpi"
FORMAT = 1
MAGIC = b"BPIDX\x00\x01\n"
TRAILER = struct.Struct("<QQ8s")  # footer offset, footer length, end magic
END_MAGIC = b"BPIDXEND"
BLOCK_HEAD = struct.Struct("<III")  # entries, bytes of names, bytes of link targets
BLOCK_ENTRIES = 4096
NO_DIR = 0xFFFFFFFF  # the run of the top-level entries has no folder entry of its own
_LEVEL = 6

# One byte per entry: what `tar -tv` shows as the first letter, hard links as 'h'.
FILE, DIRECTORY, SYMLINK, HARDLINK = b"-", b"d", b"l", b"h"
LINK_TYPES = frozenset((SYMLINK[0], HARDLINK[0]))


def _le(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class IndexWriter:
    """Writes entries into ``out`` (a binary file opened for writing) block by block."""

    def __init__(self, out: BinaryIO, kind: str) -> None:
        self.kind = kind
        # Extra keys for the footer's metadata, set by the plugin while it streams
        # (a database dump's table of contents); close() merges them.
        self.meta: dict[str, Any] = {}
        self.entries = 0
        self.size = 0
        self._out = out
        self._sha = hashlib.sha256()
        self._blocks = (array("Q"), array("I"), array("I"))  # offset, compressed length, first entry
        self._runs = (array("I"), array("I"), array("I"))  # folder entry, first child, children
        self._run_dir: int | None = None
        self._run_first = 0
        self._reset_block()
        self._write(MAGIC)

    def _reset_block(self) -> None:
        self._names: list[bytes] = []
        self._types = bytearray()
        self._modes = array("H")
        self._sizes = array("Q")
        self._mtimes = array("q")
        self._links: list[bytes] = []

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

    def add(self, name: bytes, type_: bytes, mode: int, size: int, mtime: int, link: bytes = b"") -> int:
        """Record one entry; returns its number. ``name`` is relative to its folder (top level: to /)."""
        if self._run_dir is None:
            raise RuntimeError("IndexWriter.add outside a run")
        self._names.append(name)
        self._types += type_
        self._modes.append(mode & 0o7777)
        self._sizes.append(max(0, size))
        self._mtimes.append(int(mtime))
        if type_[0] in LINK_TYPES:
            self._links.append(link)
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
        meta = {**self.meta, **(meta or {}), "format": FORMAT, "kind": self.kind, "entries": self.entries}
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
            "format": FORMAT,
            "kind": self.kind,
            "entries": len(objects) if isinstance(objects, list) else self.entries,
            "size": self.size,
            "sha256": self._sha.hexdigest(),
        }


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
