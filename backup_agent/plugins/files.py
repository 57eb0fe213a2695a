"""The `files` plugin: a PAX tar stream of some paths, restorable with plain `tar -xf`.

Options: {"paths": ["/srv/app", ...], "exclude": ["*.tmp", "/srv/app/cache/*"]}.

Members are stored relative to `/` ("srv/app/data/x"), so a restore into
/restore-here yields /restore-here/srv/app/data/x. Permissions, mtimes,
ownership, symlinks (as symlinks), hard links and empty directories are kept;
names that are not UTF-8 survive byte for byte (surrogateescape + PAX).

The walk lists each folder once and records its children in the recovery
point's index as one run (backup_agent/file_index.py) in the same pass that
archives them; the tar itself stays depth first. A restore can be selective
(ctx.selection): only the chosen files and folders are restored.

Incremental (ctx.base_index): the walk reads the base's index alongside, and a
regular file equal to the base's entry at the same path is indexed but not
archived; its data stays in the chain. A restore of such a point (ctx.chain)
takes from each base only the files the point's index says live there, then
the point's own archive whole.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from backup_agent import file_index
from backup_agent.allow import check_restored_member
from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import AgentError, InvalidOptions, TargetNotEmpty, UnsafeArchive, os_failure
from backup_agent.file_index import IndexWriter
from backup_agent.fsutil import remove_tree
from backup_agent.plugins._incremental import Base, ChainFiles, Listing
from backup_agent.plugins.base import Facts, reject_unknown, require_mapping
from backup_agent.state import is_staging_name

NAME = "files"
INDEXED = True  # fills ctx.index while it streams (backup_agent/file_index.py)
INCREMENTAL = True  # backup() compares with ctx.base_index, restore() follows ctx.chain
DATA_NAME = "data.tar"
CHUNK = 1 << 20
# Extraction filters (PEP 706) arrived in Python 3.11.4, and Debian 12 ships
# 3.11.2: _safe_member's checks are complete without them. Where the stdlib
# has its "data" filter it runs as a second opinion, and extractall is told
# the members are already vetted (which also keeps 3.12+ from warning and
# 3.14+ from stripping the permissions we restore on purpose).
_STDLIB_DATA_FILTER = getattr(tarfile, "data_filter", None)
_EXTRACT_KWARGS: dict[str, Any] = {"filter": "fully_trusted"} if _STDLIB_DATA_FILTER else {}
_TAR_ARGS: dict[str, Any] = {
    # surrogateescape round-trips file names that are not valid UTF-8.
    "encoding": "utf-8",
    "errors": "surrogateescape",
    "bufsize": CHUNK,
    "copybufsize": CHUNK,
}


def available(env: Mapping[str, str]) -> bool:
    return True  # pure Python


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    options = require_mapping(options)
    reject_unknown(options, {"paths", "exclude"})
    paths = options.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise InvalidOptions("files: 'paths' must be a non-empty list of absolute paths")
    normalised: list[str] = []
    for raw in paths:
        if not os.path.isabs(raw) or "\0" in raw:
            raise InvalidOptions(f"files: path {raw!r} is not absolute")
        normalised.append(os.path.normpath(raw))
    exclude = options.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(p, str) and p for p in exclude):
        raise InvalidOptions("files: 'exclude' must be a list of glob patterns")
    return {"paths": _outermost(normalised), "exclude": list(exclude)}


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths inside another configured path, so nothing is archived twice."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _excluded(path: str, patterns: list[str]) -> bool:
    # A pattern with a slash is matched against the absolute path, one without
    # against the entry's name, like rsync's and tar's everyday use.
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


# --- backup -------------------------------------------------------------------


def backup(options: Mapping[str, Any], sink: Sink, ctx: JobContext) -> Facts:
    """Archive the tree; with ctx.base_index, only what changed since the base (see _incremental.Base).

    The facts' ``members`` and ``total_size`` describe the whole tree either way (a
    restore test compares them); an incremental adds what its own archive holds
    (``stored_members``, ``stored_total_size``) and the files left in the chain
    (``unchanged``).
    """
    opts = validate(options)
    facts: Facts = {"paths": opts["paths"], "members": 0, "total_size": 0, "skipped": 0}
    for top in opts["paths"]:
        if not os.path.lexists(top):
            raise AgentError(f"not found: configured path {top} does not exist")
    base = Base(ctx.base_index) if ctx.base_index is not None else None
    if ctx.index is not None:
        # The next incremental treats files changed from here on as changed (see _incremental.Base).
        ctx.index.meta["walk_started_ns"] = time.time_ns()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, **_TAR_ARGS) as tar:  # type: ignore[call-overload]
        tar.members = _Unkept()
        _walk(tar, opts["paths"], opts["exclude"], ctx, facts, base)
    if base is not None:
        facts["unchanged"] = base.unchanged
        facts["stored_members"] = facts["members"] - base.unchanged
        facts["stored_total_size"] = facts["total_size"] - base.unchanged_size
    return facts


_Folder = tuple[str, "tarfile.TarInfo | None", "int | None", "Listing | None"]


def _walk(
    tar: tarfile.TarFile,
    tops: list[str],
    exclude: list[str],
    ctx: JobContext,
    facts: Facts,
    base: Base | None = None,
) -> None:
    """Archive the configured paths one folder at a time, and index each folder's listing as one run.

    A folder is listed (sorted by the bytes of the names), and its children are
    recorded in ``ctx.index`` one after the other, as that folder's run. Its
    files, symlinks and hard links are archived right then; the member of each
    subfolder is archived just before that subfolder's own contents, when the
    walk (depth first, an explicit stack: no recursion limit) gets there. So
    the tar is in plain depth-first order, a directory followed by everything
    in it, which GNU tar needs to restore directory modes and times (it sets
    them when the next member lies outside the directory); the index holds
    exactly the same members. A subfolder's member is the one taken at listing
    time; if it vanishes before the walk gets there, it is archived empty.

    The configured paths are the top-level run, named relative to ``/``; ``/``
    itself has no member, its children are that run. The stack holds folders
    still to walk, never files: memory does not grow with the number of files.
    Symlinks are stored, never followed. With a ``base``, each stacked folder
    carries its listing in the base (None: the base had no folder there).
    """
    index = ctx.index
    stack: list[_Folder]
    if len(tops) == 1 and not tops[0].strip("/"):
        stack = [("/", None, None, base.listing(None) if base is not None else None)]
    else:
        if index is not None:
            index.begin_run(None)
        tops = [top for top in tops if not _excluded(top, exclude)]
        top_listing = base.listing(None) if base is not None else None
        stack = _add_run(tar, tops, True, ctx, facts, index, base, top_listing)
        stack.reverse()
    while stack:
        folder, info, number, listing = stack.pop()
        ctx.check_cancelled()
        try:
            if info is not None:
                tar.addfile(info)
                facts["members"] += 1
            names = sorted(os.listdir(folder), key=_raw)
        except FileNotFoundError:
            # Live data: files come and go between listing and reading.
            ctx.note(f"skipped the contents of {_printable(folder)}: vanished during the backup")
            continue
        except OSError as exc:
            raise os_failure(exc) from None
        if index is not None:
            index.begin_run(number)
        children = [os.path.join(folder, name) for name in names]
        children = [child for child in children if not _excluded(child, exclude)]
        stack.extend(reversed(_add_run(tar, children, False, ctx, facts, index, base, listing)))


def _add_run(
    tar: tarfile.TarFile,
    paths: list[str],
    top_level: bool,
    ctx: JobContext,
    facts: Facts,
    index: IndexWriter | None,
    base: Base | None = None,
    listing: Listing | None = None,
) -> list[_Folder]:
    """Archive and index one listing; returns its folders (member not yet archived), their entry
    numbers and their listings in the base.

    Index names are relative to the folder (``top_level``: relative to /). A file
    the base holds unchanged is indexed, not archived (_keep_unchanged).
    """
    folders: list[_Folder] = []
    for path in paths:
        ctx.check_cancelled()
        name = _raw(path.lstrip("/") if top_level else os.path.basename(path))
        base_number = listing.find(name) if listing is not None else None
        try:
            # Taken before the data is read: a change while it is read shows in the next comparison.
            st = os.lstat(path)
            if base is not None and base_number is not None:
                origin = base.unchanged_origin(base_number, st)
                if origin is not None and _keep_unchanged(tar, path, st, facts, base):
                    if index is not None:
                        _index_stat(index, name, file_index.FILE, st, b"", origin + 1)
                    continue
            info = _add_one(tar, path, st, ctx, facts)
        except FileNotFoundError:
            ctx.note(f"skipped {_printable(path)}: vanished during the backup")
            continue
        except OSError as exc:
            raise os_failure(exc) from None
        if info is None:
            continue
        number = None
        if index is not None:
            number = _index_entry(index, name, info, st)
        if info.isdir():
            folders.append((path, info, number, base.folder_listing(base_number) if base else None))
    return folders


def _keep_unchanged(tar: tarfile.TarFile, path: str, st: os.stat_result, facts: Facts, base: Base) -> bool:
    """Count an unchanged file as part of the tree without archiving it; False: archive it after all.

    A file with more names is recorded in ``tar.inodes`` under this name, as
    gettarinfo would, so its later names still become hard-link members (their
    data is this name's, restored from the chain before the point's own archive).
    A later name of a file already archived under another name is a hard link, not
    an unchanged file.
    """
    if st.st_nlink > 1:
        key, arcname = (st.st_ino, st.st_dev), path.lstrip("/")
        if tar.inodes.setdefault(key, arcname) != arcname:
            return False
    facts["members"] += 1
    facts["total_size"] += st.st_size
    base.unchanged += 1
    base.unchanged_size += st.st_size
    return True


def _index_entry(index: IndexWriter, name: bytes, info: tarfile.TarInfo, st: os.stat_result) -> int:
    if info.islnk():
        type_, link = file_index.HARDLINK, _raw(info.linkname)
    elif info.issym():
        type_, link = file_index.SYMLINK, _raw(info.linkname)
    elif info.isdir():
        type_, link = file_index.DIRECTORY, b""
    else:
        type_, link = file_index.FILE, b""
    return _index_stat(index, name, type_, st, link, 0, info)


def _index_stat(
    index: IndexWriter,
    name: bytes,
    type_: bytes,
    st: os.stat_result,
    link: bytes,
    origin: int,
    info: tarfile.TarInfo | None = None,
) -> int:
    """Index one entry from the lstat taken before it was archived (and its TarInfo when it was).

    Times come from the nanosecond fields, so that the next incremental compares
    exactly what this one recorded.
    """
    seconds, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
    if info is not None:
        mode = info.mode
        size = info.size if info.isreg() else 0  # a hard link (LNKTYPE) is not isreg()
    else:
        mode, size = st.st_mode, st.st_size
    return index.add(
        name,
        type_,
        mode & 0o7777,
        size,
        seconds,
        link,
        mtime_nsec=nsec,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        origin=origin,
    )


def _add_one(
    tar: tarfile.TarFile, path: str, st: os.stat_result, ctx: JobContext, facts: Facts
) -> tarfile.TarInfo | None:
    """Archive one entry (a directory: only its TarInfo, see _walk); None when it was skipped."""
    info = tar.gettarinfo(path, path.lstrip("/"))
    if info is None or not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        # Sockets, pipes and devices cannot be restored safely (the restore
        # refuses them), so they are not archived either.
        facts["skipped"] += 1
        ctx.note(f"skipped {_printable(path)}: not a regular file, directory or symlink")
        return None
    if info.isreg():
        _forget_inode(tar, st)
        with open(path, "rb") as fh:
            try:
                tar.addfile(info, fh)
            except OSError as exc:
                if exc.errno is None:  # tarfile's "unexpected end of data"
                    raise AgentError(f"file shrank while being read: {_printable(path)}") from None
                raise
        facts["total_size"] += info.size
    elif info.isdir():
        return info  # archived by _walk, right before its contents
    else:
        tar.addfile(info)
    facts["members"] += 1
    return info


class _Unkept(list):
    """A TarFile's list of members that keeps none.

    tarfile appends every member it writes or reads to ``tar.members`` (about 800
    bytes each: 780 MiB for a million files). Nothing here looks back at them (hard
    links are matched through ``tar.inodes`` when writing, and made from the file
    already on disk when reading), so they go as soon as they are used: one at a
    time, which also keeps the allocator from handing memory back and forth.
    """

    def append(self, member: tarfile.TarInfo) -> None:
        pass


def _forget_inode(tar: tarfile.TarFile, st: os.stat_result) -> None:
    """Drop tarfile's record of a file with one name: only a file with more names needs it.

    gettarinfo records every regular file's inode, to spot the next name of a hard
    link; for a million files that is a million entries (some 200 MB).
    """
    if st.st_nlink == 1:
        tar.inodes.pop((st.st_ino, st.st_dev), None)


def _raw(name: str) -> bytes:
    """The bytes of a name as the tar stream stores them (utf-8, surrogateescape: see _TAR_ARGS)."""
    return name.encode("utf-8", "surrogateescape")


def _printable(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- restore ------------------------------------------------------------------


def restore(
    options: Mapping[str, Any], source: Source, target: str, overwrite: bool, ctx: JobContext
) -> Facts:
    """Unpack into `target` (a directory).

    The archive is first extracted into a hidden staging folder inside the
    target, then moved into place: an unsafe member, a damaged stream or a
    cancel aborts the restore before anything in the target has changed. Only
    a failure while moving into place (e.g. permissions on existing entries
    with overwrite) can leave the target partly restored.

    A selective restore (``ctx.selection``: paths relative to ``/``, as bytes)
    restores only the members that are a selected path or lie under a
    selected folder, plus the folders above them (with their archived modes;
    they are not counted in the facts). Every selected path must be in the
    archive, else InvalidOptions names the first missing one before anything
    reaches the target. A selected hard link whose target file is not selected
    cannot be restored from the stream (a hard link member carries no data, and
    its target was passed over): the restore fails and names both, so that the
    target can be selected too. The facts add ``selected``, the number of paths.

    An incremental point (``ctx.chain``) is rebuilt in the same staging folder:
    from each base, oldest first, the regular files the point's index says are
    stored there (ChainFiles), then the point's own archive whole. That last
    archive holds every directory, symlink and hard link of the point, so hard
    links find their files already in place and tarfile sets the directories'
    modes and times after every file is in. The facts count the whole tree.
    """
    if not isinstance(target, str) or not os.path.isabs(target):
        raise InvalidOptions(f"files: restore target must be an absolute path, got {target!r}")
    dest = Path(os.path.normpath(target))
    created = not dest.exists()
    if created:
        dest.mkdir(mode=0o700, parents=True)
    elif not dest.is_dir():
        raise InvalidOptions(f"files: restore target {dest} is not a directory")
    elif not overwrite and any(not is_staging_name(p.name) for p in dest.iterdir()):
        # Another restore's staging (running, or left by a crash for the sweep)
        # is not data of the target.
        raise TargetNotEmpty(str(dest))
    staging = dest / f".restore-{ctx.job_id}-{secrets.token_hex(4)}"
    ctx.staging(staging)
    staging.mkdir(mode=0o700)
    try:
        selection = _Selection(ctx.selection) if ctx.selection is not None else None
        final_base = os.path.realpath(dest)
        facts: Facts = {"members": 0, "total_size": 0, "skipped_links": []}
        if ctx.chain:
            _extract_chain(staging, ctx, final_base, selection, facts)
        archived_dirs = _extract(source, staging, ctx, final_base, selection, facts)
        if selection is not None:
            selection.check_found()
            facts["selected"] = len(selection.paths)
        _merge(str(staging), str(dest), archived_dirs)
    except BaseException as exc:
        # A target we created holds nothing but this restore: remove it whole,
        # so a failed restore leaves no half-restored tree behind.
        remove_tree(dest if created else staging)
        if isinstance(exc, OSError):
            raise os_failure(exc) from None
        raise
    staging.rmdir()
    return facts


class _Selection:
    """What a selective restore restores: the selected paths, what they cover, the folders above them."""

    def __init__(self, paths: tuple[bytes, ...]) -> None:
        self.paths = paths
        self._paths = frozenset(paths)
        # The folders above a selected path: restored (as folders only) so the
        # selected entries find their parents with the archived modes.
        self.ancestors = frozenset(
            path[:i] for path in paths for i in range(len(path)) if path[i : i + 1] == b"/"
        )
        self.found: set[bytes] = set()

    def covering(self, name: bytes) -> bytes | None:
        """The selected path that ``name`` is or lies under; None when it is not selected."""
        if name in self._paths:
            return name
        at = name.find(b"/")
        while at != -1:
            if name[:at] in self._paths:
                return name[:at]
            at = name.find(b"/", at + 1)
        return None

    def check_found(self) -> None:
        for path in self.paths:
            if path not in self.found:
                raise InvalidOptions(f"files: /{file_index.path_text(path)} is not in this backup")


def _extract_chain(
    staging: Path, ctx: JobContext, final_base: str, selection: _Selection | None, facts: Facts
) -> None:
    """Unpack from each base of the point (ctx.chain) the regular files whose data it holds."""
    assert ctx.point_index is not None  # the executor opens it with the chain
    for part in ctx.chain:
        ctx.check_cancelled()
        point = ChainFiles(ctx.point_index)  # its cursors follow one archive's order

        def kept(member: tarfile.TarInfo, origin: int = part.origin, point: ChainFiles = point) -> bool:
            return member.isreg() and point.origin(_raw(member.name)) == origin

        before = facts["members"]
        with part.open() as stream:
            _extract(stream, staging, ctx, final_base, selection, facts, kept)
        ctx.note(f"restored {facts['members'] - before} unchanged file(s) from {part.location}")


def _extract(
    source: Source,
    staging: Path,
    ctx: JobContext,
    final_base: str,
    selection: _Selection | None,
    facts: Facts,
    kept: Callable[[tarfile.TarInfo], bool] | None = None,
) -> set[str]:
    """Unpack into ``staging``, counting into ``facts``; returns the directories the archive holds.

    ``final_base`` is the resolved target, where the members end up after the
    merge; an in-place restore (ctx.restore_only_under) may put them only
    under the paths this server allows. ``kept``: which members to unpack at all
    (a base of an incremental point gives only some of its files).
    """
    archived_dirs: set[str] = set()
    dest = os.path.realpath(staging)

    def vetted(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        # Each member is checked right before extractall writes it, so the
        # symlink checks see everything already on disk.
        for member in tar:
            ctx.check_cancelled()
            if kept is not None and not kept(member):
                continue
            if selection is not None and not _select(member, selection):
                continue
            if selection is None or selection.covering(_raw(member.name).rstrip(b"/")) is not None:
                facts["members"] += 1
                if member.isreg():
                    facts["total_size"] += member.size
            safe = _safe_member(member, dest, ctx, facts)
            if safe is not None and ctx.restore_only_under is not None:
                final = os.path.normpath(os.path.join(final_base, member.name))
                check_restored_member(_printable(member.name), final, ctx.restore_only_under)
            if safe is not None:
                if safe.isdir():
                    archived_dirs.add(os.path.normpath(safe.name))
                yield safe

    with tarfile.open(fileobj=source, mode="r|", **_TAR_ARGS) as tar:  # type: ignore[call-overload]
        tar.members = _Unkept()  # the first member, read by open(), is yielded all the same
        tar.extractall(staging, members=vetted(tar), **_EXTRACT_KWARGS)  # noqa: S202 - members are vetted
    return archived_dirs


def _select(member: tarfile.TarInfo, selection: _Selection) -> bool:
    """Whether a selective restore extracts ``member``: selected, or a folder above a selected path."""
    name = _raw(member.name).rstrip(b"/")
    covering = selection.covering(name)
    if covering is None:
        return member.isdir() and name in selection.ancestors
    selection.found.add(covering)
    if member.islnk() and selection.covering(_raw(member.linkname).rstrip(b"/")) is None:
        raise InvalidOptions(
            f"files: /{file_index.path_text(name)} is a hard link to "
            f"/{file_index.path_text(_raw(member.linkname))}, which is not selected: select it too"
        )
    return True


def _safe_member(member: tarfile.TarInfo, dest: str, ctx: JobContext, facts: Facts) -> tarfile.TarInfo | None:
    """The rules of tarfile's "data" filter, stricter on names, gentler on permissions.

    Refused outright (the whole restore fails): absolute names, names or hard
    links leading outside the target (through '..' or a symlink already
    extracted), devices and pipes. Our own archives never hold those, so one
    of them means the stored file was crafted. Symlinks pointing outside the
    target (often absolute symlinks in live trees) are skipped and listed, not
    created. Unlike the data filter, permission bits and ownership are
    restored as archived, less setuid/setgid.
    """
    name = _printable(member.name)
    if member.name.startswith("/") or os.path.isabs(member.name):
        raise UnsafeArchive(f"absolute path {name}")
    if member.isdev():  # character and block devices, FIFOs
        raise UnsafeArchive(f"device or pipe {name}")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"unsupported member type {member.type!r}: {name}")
    if not _within(os.path.realpath(os.path.join(dest, member.name)), dest, allow_equal=member.isdir()):
        raise UnsafeArchive(f"{name} would be written outside the target")
    if member.issym():
        points_to = os.path.realpath(os.path.join(dest, os.path.dirname(member.name), member.linkname))
        if os.path.isabs(member.linkname) or not _within(points_to, dest):
            link = f"{name} -> {_printable(member.linkname)}"
            facts["skipped_links"].append(link)
            ctx.note(f"skipped symlink pointing outside the target: {link}")
            return None
    if member.islnk():
        points_to = os.path.realpath(os.path.join(dest, member.linkname))
        if os.path.isabs(member.linkname) or not _within(points_to, dest):
            raise UnsafeArchive(f"hard link {name} -> {_printable(member.linkname)} leads outside the target")
    if _STDLIB_DATA_FILTER is not None:
        try:
            _STDLIB_DATA_FILTER(member, dest)  # a second opinion where the stdlib has one
        except tarfile.FilterError as exc:  # type: ignore[attr-defined]
            raise UnsafeArchive(str(exc)) from None
    safe = copy.copy(member)
    safe.mode = member.mode & ~(stat.S_ISUID | stat.S_ISGID)
    return safe


def _within(path: str, dest: str, *, allow_equal: bool = False) -> bool:
    return path.startswith(dest + os.sep) or (allow_equal and path == dest)


def _merge(src: str, dst: str, archived_dirs: set[str], rel: str = "") -> None:
    """Move everything from staging `src` into `dst`, replacing what is in the way.

    Existing entries are compared with lstat, so a symlink already in the
    target is replaced, never followed: nothing is written outside `dst`.
    Directories the archive only implies (``srv`` of ``srv/app/data``, or
    ``tmp`` when restoring in place to ``/``) keep the target's own mode: a
    restore must never turn ``/tmp`` from 1777 into 0755.
    """
    for entry in os.scandir(src):
        to = os.path.join(dst, entry.name)
        entry_rel = os.path.join(rel, entry.name) if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        existing = os.lstat(to) if is_dir and os.path.isdir(to) and not os.path.islink(to) else None
        if is_dir:
            # tarfile applied the archived mode already; a read-only directory
            # cannot be moved to a new parent, nor emptied, until we can write it.
            os.chmod(entry.path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        if is_dir and os.path.isdir(to) and not os.path.islink(to):
            # Its mode is replaced by the archived one below anyway; until then
            # it must be writable for a non-root agent to replace its entries.
            os.chmod(to, stat.S_IMODE(os.lstat(to).st_mode) | stat.S_IRWXU)
            _merge(entry.path, to, archived_dirs, entry_rel)
            os.rmdir(entry.path)
        else:
            if os.path.isdir(to) and not os.path.islink(to):
                shutil.rmtree(to)
            elif os.path.lexists(to):
                os.unlink(to)
            os.rename(entry.path, to)
        if is_dir:
            # Put back the archived mode and mtime, which the moves just changed;
            # for a directory the archive only implied, the target's own.
            keep = existing if existing is not None and entry_rel not in archived_dirs else st
            os.chmod(to, stat.S_IMODE(keep.st_mode))
            os.utime(to, ns=(keep.st_atime_ns, keep.st_mtime_ns))


# --- restore test -------------------------------------------------------------


def scratch_target(options: Mapping[str, Any], ctx: JobContext) -> AbstractContextManager[str]:
    return _scratch_dir(ctx)


@contextmanager
def _scratch_dir(ctx: JobContext) -> Iterator[str]:
    with tempfile.TemporaryDirectory(
        prefix=f"backup-agent-restore-test-{ctx.job_id}-", dir=ctx.scratch_dir, ignore_cleanup_errors=True
    ) as path:
        yield path


def compare(expected: Facts, actual: Facts) -> list[str]:
    return [
        f"{key}: backup has {expected.get(key)}, restore has {actual.get(key)}"
        for key in ("members", "total_size")
        if expected.get(key) != actual.get(key)
    ]
