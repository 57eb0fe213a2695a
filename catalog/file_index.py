"""Reading a recovery point's index (``index.bpi``): folder listings, look-ups, name search.

The agent writes the file while the backup streams (backup_agent/file_index.py);
docs/file-index.md is the format. A listing reads the footer once (cached per
process) and then one or two compressed blocks, so it costs the same in a
point of a thousand entries and of a million. Search decompresses every block
but matches names with one regular expression per block, in C.

Paths are text in GNU tar's "escape" quoting (``path_text``/``path_bytes``).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The format is defined and parsed once, by the agent's module (it ships in the same package).
import backup_agent.file_index as fmt
from backup_agent.file_index import Block, DamagedIndex, IndexReader, path_bytes, path_text

TYPE_NAMES = {
    fmt.FILE[0]: "file",
    fmt.DIRECTORY[0]: "directory",
    fmt.SYMLINK[0]: "symlink",
    fmt.HARDLINK[0]: "hardlink",
}
DIRECTORY = fmt.DIRECTORY[0]


#: The file is not a readable index (damaged, truncated, or another format): the reader's own error.
IndexError_ = DamagedIndex


class NotFound(Exception):
    """The path is not in this recovery point."""


class NotAFolder(Exception):
    """The path is in the point but is not a folder."""


@dataclass(frozen=True)
class Entry:
    path: str  # escaped text, absolute ("/srv/app/x")
    name: str
    type: str  # file, directory, symlink, hardlink
    size: int | None
    mtime: int | None
    mode: int | None
    link: str | None = None
    number: int | None = None  # the entry's number in its index; None for a folder only implied
    rows: int | None = None  # a database table's rows when it was dumped

    @property
    def is_dir(self) -> bool:
        return self.type == "directory"

    @property
    def modified(self) -> datetime | None:
        """``mtime`` as a UTC time; None when unknown or out of range (a crafted or odd clock)."""
        if self.mtime is None:
            return None
        try:
            return datetime.fromtimestamp(self.mtime, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None


def normal_path(text: str) -> bytes:
    """An absolute path as text → its bytes without the leading and trailing slashes ("" is /).

    ValueError for what no backup can hold: a relative path, '.' or '..' parts, NUL.
    """
    if not isinstance(text, str) or not text.startswith("/"):
        raise ValueError("Give an absolute path, starting with /.")
    raw = path_bytes(text)
    parts = [p for p in raw.split(b"/") if p]
    if b"\0" in raw or any(p in (b".", b"..") for p in parts):
        raise ValueError("A path may not contain '.', '..' or NUL.")
    return b"/".join(parts)


# --- the file -------------------------------------------------------------------------


class FileIndex:
    """A recovery point's index file, opened for reading. Safe to share between threads.

    Format 1 and 2 alike: the parsing (footer, blocks, damage checks, size limits) is the
    agent's ``IndexReader``; this adds paths as text, listings, look-ups and search.
    """

    BLOCK_CACHE = 16

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._reader = IndexReader(self.path, block_cache=self.BLOCK_CACHE)
        self.file_size = self._reader.file_size
        self.meta: dict[str, Any] = self._reader.meta
        self.kind: str = self._reader.kind
        self.entries: int = self._reader.entries
        # A database dump's index is its table of contents, in the footer: no blocks.
        self.objects: list[Entry] | None = (
            _objects(self.meta.get("objects")) if self.kind in DATABASE_KINDS else None
        )

    # --- low level --------------------------------------------------------------------

    def _locate(self, number: int) -> tuple[Block, int]:
        if not 0 <= number < self.entries:
            raise NotFound(f"entry {number}")
        return self._reader.locate(number)

    def _name(self, number: int) -> bytes:
        block, k = self._locate(number)
        return block.names[k]

    def _children(self, folder: int | None) -> range:
        """Entry numbers of a folder's children (None: the top level)."""
        return self._reader.children(folder)

    def raw_path(self, number: int) -> bytes:
        if not 0 <= number < self.entries:
            raise NotFound(f"entry {number}")
        return self._reader.raw_path(number)

    def entry(self, number: int, *, path: bytes | None = None) -> Entry:
        block, k = self._locate(number)
        types, modes, sizes, mtimes, links = block.columns
        raw = path if path is not None else self.raw_path(number)
        link = links.get(k)
        type_ = types[k]
        return Entry(
            path="/" + path_text(raw),
            name=path_text(raw.rsplit(b"/", 1)[-1]),
            type=TYPE_NAMES.get(type_, "file"),
            size=sizes[k] if type_ != DIRECTORY else None,
            mtime=mtimes[k],
            mode=modes[k],
            link=path_text(link) if link is not None else None,
            number=number,
        )

    # --- folders ----------------------------------------------------------------------

    def _find_child(self, folder: int | None, name: bytes) -> int | None:
        children = self._children(folder)
        number = children.start
        while number < children.stop:
            block, k = self._locate(number)
            names = block.names
            end = min(len(names), k + children.stop - number)
            try:
                return number + names.index(name, k, end) - k
            except ValueError:
                number += end - k
        return None

    def _top_level(self) -> list[tuple[bytes, int]]:
        return [(self._name(n), n) for n in self._children(None)]

    def resolve(self, rel: bytes) -> int | None:
        """The entry at ``rel`` (bytes without leading slash); None for a folder only implied.

        Raises NotFound when the point holds nothing there.
        """
        if not rel:
            return None
        if self.objects is not None:
            return self._object_number(rel)
        for name, number in self._top_level():
            if rel == name:
                return number
            if rel.startswith(name + b"/"):
                current = number
                for part in rel[len(name) + 1 :].split(b"/"):
                    if self._type(current) != DIRECTORY:
                        raise NotFound(rel)
                    found = self._find_child(current, part)
                    if found is None:
                        raise NotFound(rel)
                    current = found
                return current
            if name.startswith(rel + b"/"):
                return None  # /srv of a backup of /srv/app: implied, not archived
        raise NotFound(rel)

    def _type(self, number: int) -> int:
        block, k = self._locate(number)
        return block.columns[0][k]

    def listdir(self, rel: bytes, offset: int = 0, limit: int = 100) -> tuple[int, list[Entry]]:
        """(number of children, a page of them) of the folder at ``rel``, in the archive's order."""
        number = self.resolve(rel)
        if self.objects is not None:
            if number is not None:
                raise NotAFolder(rel)
            children = self._object_children(rel)
            return len(children), children[offset : offset + limit]
        if number is None:
            implied = self._implied_children(rel)
            return len(implied), implied[offset : offset + limit]
        if self._type(number) != DIRECTORY:
            raise NotAFolder(rel)
        children = self._children(number)
        page = children[offset : offset + limit]
        prefix = rel + b"/"
        return len(children), [self.entry(n, path=prefix + self._name(n)) for n in page]

    def _implied_children(self, rel: bytes) -> list[Entry]:
        prefix = rel + b"/" if rel else b""
        seen: dict[bytes, Entry] = {}
        for name, number in self._top_level():
            if not name.startswith(prefix):
                continue
            head, sep, _ = name[len(prefix) :].partition(b"/")
            if head in seen:
                continue
            path = prefix + head
            seen[head] = (
                Entry("/" + path_text(path), path_text(head), "directory", None, None, None)
                if sep
                else self.entry(number, path=path)
            )
        return sorted(seen.values(), key=lambda e: path_bytes(e.name))

    # --- a database's table of contents -------------------------------------------------

    def entry_at(self, rel: bytes) -> Entry | None:
        """The entry at ``rel``, for files and tables alike; None for a folder only implied."""
        number = self.resolve(rel)
        if number is None:
            return None
        if self.objects is not None:
            return self.objects[number]
        return self.entry(number, path=rel)

    def _object_number(self, rel: bytes) -> int | None:
        path = "/" + path_text(rel)
        for number, obj in enumerate(self.objects or ()):
            if obj.path == path:
                return number
            if obj.path.startswith(path + "/"):
                return None  # a schema
        raise NotFound(rel)

    def _object_children(self, rel: bytes) -> list[Entry]:
        prefix = "/" + path_text(rel) + "/" if rel else "/"
        seen: dict[str, Entry] = {}
        for obj in self.objects or ():
            if obj.path.startswith(prefix):
                head, sep, _ = obj.path[len(prefix) :].partition("/")
                if head not in seen:
                    seen[head] = Entry(prefix + head, head, "schema", None, None, None) if sep else obj
        return sorted(seen.values(), key=lambda e: e.name)

    # --- search -----------------------------------------------------------------------

    def search(self, pattern: re.Pattern[bytes], limit: int) -> Iterator[Entry]:
        """Entries whose name matches ``pattern`` (see ``name_pattern``), in the archive's order."""
        if self.objects is not None:
            matches = (e for e in self.objects if pattern.search(path_bytes(e.name) + b"\0"))
            yield from (e for _, e in zip(range(limit), matches, strict=False))
            return
        found = 0
        firsts = self._reader.block_firsts
        for i in range(len(firsts)):
            block = self._reader.block(i)
            blob = block.names_blob
            at, k = 0, 0
            for match in pattern.finditer(blob):
                k += blob.count(b"\0", at, match.start())
                at = match.start()
                yield self.entry(firsts[i] + k)
                found += 1
                if found >= limit:
                    return


DATABASE_KINDS = frozenset(("postgresql", "mysql"))


def _objects(raw: Any) -> list[Entry]:
    """A dump's table of contents: ``{"schema"?, "name", "type", "rows"?, "bytes"?}`` each."""
    if not isinstance(raw, list):
        raise IndexError_("a database index without its objects")
    objects = []
    for number, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise IndexError_("a damaged object in the table of contents")
        name = path_text(item["name"].encode("utf-8", "surrogateescape")).replace("/", "\\057")
        schema = item.get("schema")
        path = f"/{path_text(schema.encode())}/{name}" if isinstance(schema, str) else f"/{name}"
        objects.append(
            Entry(
                path=path,
                name=name,
                type=str(item.get("type") or "table"),
                size=item.get("bytes") if isinstance(item.get("bytes"), int) else None,
                mtime=None,
                mode=None,
                number=number,
                rows=item.get("rows") if isinstance(item.get("rows"), int) else None,
            )
        )
    return objects


def name_pattern(text: str) -> re.Pattern[bytes]:
    """A name search as a regular expression over a block's NUL-separated names.

    A glob (``*``, ``?``, ``[...]``) matches whole names; plain text matches names
    containing it. Case is ignored, as people type names at 2 a.m.
    """
    raw = path_bytes(text)
    if b"/" in raw or b"\0" in raw:
        raise ValueError("Search by file name: without '/'.")
    if not any(c in raw for c in b"*?["):
        raw = b"*" + raw + b"*"
    out = []
    i = 0
    while i < len(raw):
        c = raw[i : i + 1]
        if c == b"*":
            out.append(rb"[^\x00]*")
        elif c == b"?":
            out.append(rb"[^\x00]")
        elif c == b"[" and b"]" in raw[i + 2 :] or c == b"[" and raw[i + 1 : i + 2] == b"]":
            end = raw.index(b"]", i + 2)
            body = raw[i + 1 : end]
            negate = body[:1] == b"!"
            body = body[1:] if negate else body
            body = body.replace(b"\\", b"\\\\").replace(b"^", b"\\^")
            out.append(b"[" + (b"^\\x00" if negate else b"") + body + b"]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(rb"(?<![^\x00])" + b"".join(out) + rb"(?=\x00)", re.IGNORECASE)


# --- the portal's copies ------------------------------------------------------------------

_open_lock = threading.Lock()
_open: OrderedDict[tuple[str, int, int], FileIndex] = OrderedDict()
OPEN_INDEXES = 32


def open_index(path: str | os.PathLike) -> FileIndex:
    """The index at ``path``, kept open (footer parsed) for the next request of this process."""
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _open_lock:
        if key in _open:
            _open.move_to_end(key)
            return _open[key]
    index = FileIndex(path)
    with _open_lock:
        _open[key] = index
        while len(_open) > OPEN_INDEXES:
            _open.popitem(last=False)
    return index
