"""What an incremental files backup compares, and where a chain restore finds each file.

Both read an index (backup_agent/file_index.py) alongside a stream in the same
order: the walk lists each folder's names sorted by bytes, and so does every
index run. So a folder's listing is a cursor moving forward (Listing), and
nothing is ever held per file: a million-file tree costs what a thousand-file
one does, plus a few cached blocks.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict

from backup_agent import file_index
from backup_agent.file_index import IndexReader

#: Ticks of the clock a file system stamps times with, at most (and more than a few ms of skew):
#: a file whose ctime is this close to the start of the base's walk may have changed again in
#: the same tick after the walk read it, so it is compared as changed ("racy", as git says).
RACY_NS = 50_000_000
#: File systems with whole-second times (ext4's 128-byte inodes, FAT): a second, two for FAT.
RACY_COARSE_NS = 2_000_000_000


class Base:
    """The base point's index, read alongside the walk: for each entry, the base's at the same path.

    The walk and the index share their order (folder by folder, names sorted by
    bytes), so each folder's base listing is a cursor moving forward with the
    folder's own listing: nothing is held per file, only per folder on the walk's
    stack. A name the cursor misses (never for a listing sorted alike) is just
    archived again, so a mismatch can cost bytes, never a file.
    """

    def __init__(self, reader: IndexReader) -> None:
        self.reader = reader
        started = reader.meta.get("walk_started_ns")
        self.started = started if type(started) is int else None
        self.depth = reader.meta.get("depth")  # _open_base checked it: an int, the chain's length
        self.unchanged = 0
        self.unchanged_size = 0

    def listing(self, folder: int | None) -> Listing:
        return Listing(self.reader, self.reader.children(folder), ordered=folder is not None)

    def folder_listing(self, number: int | None) -> Listing | None:
        """The listing of the base's entry ``number`` if that is a folder."""
        if number is None or self.reader.type(number) != file_index.DIRECTORY[0]:
            return None
        return self.listing(number)

    def unchanged_origin(self, number: int, st: os.stat_result) -> int | None:
        """The base entry's origin if the file at ``st`` is that very file, unchanged; else None."""
        block, k = self.reader.locate(number)
        extra = block.extra
        if extra is None or block.types[k] != file_index.FILE[0] or not stat.S_ISREG(st.st_mode):
            return None
        _, modes, sizes, mtimes, _ = block.columns
        mtime_nsec, ctime_ns, inodes, origins = extra
        seconds, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        if (sizes[k], mtimes[k], mtime_nsec[k], ctime_ns[k], inodes[k], modes[k]) != (
            st.st_size,
            seconds,
            nsec,
            st.st_ctime_ns,
            st.st_ino,
            st.st_mode & 0o7777,
        ):
            return None
        if self.started is not None:
            coarse = st.st_ctime_ns % 1_000_000_000 == 0
            if st.st_ctime_ns >= self.started - (RACY_COARSE_NS if coarse else RACY_NS):
                return None
        if not isinstance(self.depth, int) or origins[k] > self.depth:
            return None  # data in no member of the chain (a crafted index): archive it again
        return origins[k]


class Listing:
    """One folder's children in an index, looked up by name in the listing's own order (bytes).

    A cursor that only moves forward: names asked for in that order cost one pass
    over the run, whatever its size.
    """

    def __init__(self, reader: IndexReader, children: range, *, ordered: bool) -> None:
        self._reader = reader
        self._children = children
        self._at = children.start
        # The configured paths (the top level) are listed in their own order: scanned, they are few.
        self._ordered = ordered

    def find(self, name: bytes) -> int | None:
        if not self._ordered:
            return next((n for n in self._children if self._reader.name(n) == name), None)
        while self._at < self._children.stop:
            other = self._reader.name(self._at)
            if other >= name:
                if other != name:
                    return None
                self._at += 1
                return self._at - 1
            self._at += 1
        return None


_IMPLIED = Listing(None, range(0), ordered=False)  # type: ignore[arg-type] # a folder above the paths


class ChainFiles:
    """The restored point's regular files and where their data lives, looked up by path.

    A base's archive streams past in its walk's order, which is also (for what both
    hold) the point's index order: folder by folder, names sorted by bytes. So the
    last few folders are kept with a cursor in their listing (Listing), nothing
    per file, and the point's index is read forward a block at a time.
    """

    FOLDERS = 16

    def __init__(self, reader: IndexReader) -> None:
        self.reader = reader
        self._folders: OrderedDict[bytes, Listing | None] = OrderedDict()

    def origin(self, rel: bytes) -> int | None:
        """The origin of the regular file at ``rel`` in the point; None when the point has none there."""
        parent, _, name = rel.rpartition(b"/")
        listing = self._listing(parent)
        if listing is None:
            return None  # its folder is not in the point
        # _IMPLIED: the folder is above the configured paths, so the file is one of them.
        number = self.reader.lookup(rel) if listing is _IMPLIED else listing.find(name)
        if number is None:
            return None
        block, k = self.reader.locate(number)
        if block.types[k] != file_index.FILE[0] or block.extra is None:
            return None
        return block.extra[3][k]

    def _listing(self, parent: bytes) -> Listing | None:
        if parent in self._folders:
            self._folders.move_to_end(parent)
            return self._folders[parent]
        number = self.reader.lookup(parent) if parent else None
        listing = None
        if number is not None and self.reader.type(number) == file_index.DIRECTORY[0]:
            listing = Listing(self.reader, self.reader.children(number), ordered=True)
        elif number is None:
            tops = self.reader.children(None)
            if not parent or any(self.reader.name(top).startswith(parent + b"/") for top in tops):
                listing = _IMPLIED
        self._folders[parent] = listing
        if len(self._folders) > self.FOLDERS:
            self._folders.popitem(last=False)
        return listing
