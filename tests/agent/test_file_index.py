"""The recovery point's index, written by the files plugin while it streams: it lists exactly the tar.

The reference is GNU tar itself: `tar --quoting-style=escape -tvf` on the
stored archive, compared member by member with the index read by the portal's
reader (catalog/file_index.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest

from backup_agent import file_index
from backup_agent.file_index import IndexReader, IndexWriter
from catalog.file_index import FileIndex, IndexError_, name_pattern, path_bytes

from .helpers import Points, backup_job, execute, succeeded, tool

LONG = ["L" * 120 + "-one", "M" * 120 + "-two", "N" * 120 + "-three"]


def awkward_tree(top: Path) -> None:
    """Names with spaces, newlines, tabs, backslashes, bytes that are not UTF-8; long paths; links."""
    raw = os.fsencode(top)
    (top / "plain").mkdir()
    (top / "plain" / "with space.txt").write_text("space\n")
    (top / "plain" / "new\nline.txt").write_text("newline\n")
    (top / "plain" / "tab\there").write_text("tab\n")
    (top / "plain" / "back\\slash").write_text("backslash\n")
    (top / "plain" / "é-utf8.txt").write_text("utf8\n")
    with open(os.path.join(raw, b"plain", b"caf\xe9"), "wb") as fh:
        fh.write(b"latin-1 name\n")
    os.mkdir(os.path.join(raw, b"dir-\xff\xfe"))
    with open(os.path.join(raw, b"dir-\xff\xfe", b"inner"), "wb") as fh:
        fh.write(b"inside a folder whose name is not UTF-8\n")
    deep = top.joinpath(*LONG)
    deep.mkdir(parents=True)
    (deep / ("F" * 100 + ".txt")).write_text("deep\n")
    assert len(os.fsencode(deep / ("F" * 100 + ".txt"))) > 255 + len(raw)
    (top / "empty").mkdir()
    (top / "empty-nested" / "inner").mkdir(parents=True)
    (top / "sticky").mkdir()
    (top / "sticky").chmod(0o1777)
    (top / "secret").write_text("s\n")
    (top / "secret").chmod(0o600)
    (top / "run.sh").write_text("#!/bin/sh\n")
    (top / "run.sh").chmod(0o4755)
    os.symlink("plain/with space.txt", top / "link to space")
    os.symlink(b"dangling-\xe9", os.path.join(raw, b"dangling"))
    os.link(top / "plain" / "with space.txt", top / "zz-hard")
    (top / "skip.tmp").write_text("excluded\n")
    with socket.socket(socket.AF_UNIX) as sock:  # not archived (skipped), so not in the index
        sock.bind(str(top / "sock"))


def index_of(storage_root: Path, report: dict) -> FileIndex:
    return FileIndex(storage_root / report["location"] / file_index.FILE_NAME)


def walk_index(index: FileIndex) -> dict[str, tuple]:
    """Every archived entry, by escaped path without the leading slash: (type, mode, size, link)."""
    found: dict[str, tuple] = {}
    folders = [b""]
    while folders:
        rel = folders.pop()
        total, entries = index.listdir(rel, 0, 1_000_000)
        assert total == len(entries)
        for entry in entries:
            if entry.is_dir:
                folders.append(path_bytes(entry.path[1:]))
            if entry.number is None:
                continue  # a folder above the configured paths: only implied, not archived
            letter = {"file": "-", "directory": "d", "symlink": "l", "hardlink": "h"}[entry.type]
            found[entry.path[1:]] = (letter, entry.mode, entry.size or 0, entry.link)
    return found


def permissions(letter: str, mode: int) -> str:
    """What `tar -tv` prints for a type and mode: drwxr-xr-x, -rwsr-xr-x, drwxrwxrwt..."""
    out = letter
    for shift, special, char in ((6, stat.S_ISUID, "s"), (3, stat.S_ISGID, "s"), (0, stat.S_ISVTX, "t")):
        bits = (mode >> shift) & 7
        out += "r" if bits & 4 else "-"
        out += "w" if bits & 2 else "-"
        if mode & special:
            out += char if bits & 1 else char.upper()
        else:
            out += "x" if bits & 1 else "-"
    return out


def tar_listing(archive: Path) -> dict[str, tuple]:
    """`tar -tv` of the archive: escaped path -> (type letter, permission string, size, link target)."""
    done = subprocess.run(
        ["tar", "--quoting-style=escape", "-tvf", str(archive)],
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for line in done.stdout.splitlines():
        perms, _owner, size, _date, _time, rest = line.split(None, 5)
        link = None
        if perms[0] == "l":
            rest, link = rest.split(" -> ", 1)
        elif perms[0] == "h":
            rest, link = rest.split(" link to ", 1)
        found[rest.rstrip("/")] = (perms[0], perms, int(size), link)
    return found


@pytest.fixture
def awkward(tmp_path: Path) -> Path:
    top = tmp_path / "src" / "app"
    top.mkdir(parents=True)
    awkward_tree(top)
    return top


def test_the_index_lists_exactly_what_tar_lists(awkward: Path, storage_root: Path):
    job = backup_job("files", {"paths": [str(awkward)], "exclude": ["*.tmp"]}, storage_root)
    report = succeeded(execute(job))

    listed = tar_listing(storage_root / report["location"] / "data.tar")
    indexed = walk_index(index_of(storage_root, report))

    assert set(indexed) == set(listed)
    for path, (letter, mode, size, link) in indexed.items():
        assert (letter, permissions(letter, mode), size, link) == listed[path], path
    # The awkward ones really are there, escaped the way tar prints them.
    top = str(awkward).lstrip("/")
    for name in ("plain/new\\nline.txt", "plain/tab\\there", "plain/back\\\\slash", "plain/caf\\351",
                 "dir-\\377\\376/inner", "plain/é-utf8.txt", "empty-nested/inner", "/".join(LONG)):
        assert f"{top}/{name}" in indexed, name
    # A folder's files are archived before its subfolders' contents: zz-hard comes first.
    assert indexed[f"{top}/zz-hard"] == ("-", 0o644, 6, None)
    assert indexed[f"{top}/plain/with space.txt"] == ("h", 0o644, 0, f"{top}/zz-hard")
    assert indexed[f"{top}/dangling"][3] == "dangling-\\351"
    assert not [p for p in indexed if p.endswith(("skip.tmp", "sock"))]
    assert report["manifest"]["facts"]["members"] == len(indexed) == report["index"]["entries"]


def test_index_summary_is_in_the_report_and_the_manifest_and_matches_the_file(
    awkward: Path, storage_root: Path
):
    report = succeeded(execute(backup_job("files", {"paths": [str(awkward)]}, storage_root, "gzip")))

    path = storage_root / report["location"] / file_index.FILE_NAME
    data = path.read_bytes()
    summary = report["index"]
    assert summary == {
        "format": 2,
        "kind": "files",
        "entries": summary["entries"],
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert report["manifest"]["index"] == summary
    on_disk = json.loads((storage_root / report["location"] / "manifest.json").read_text())
    assert on_disk["index"] == summary
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    # Metadata only: no file's contents is in it.
    for content in (b"space\n", b"latin-1 name\n", b"deep\n"):
        assert content not in data


def test_each_folder_listing_is_one_run_equal_to_the_folder(awkward: Path, storage_root: Path):
    exclude = ["*.tmp", f"{awkward}/plain/tab*"]
    job = backup_job("files", {"paths": [str(awkward)], "exclude": exclude}, storage_root)
    report = succeeded(execute(job))
    index = index_of(storage_root, report)

    base = os.fsencode(awkward)
    for dirpath, _dirnames, _filenames in os.walk(base):
        names = sorted(
            name
            for name in os.listdir(dirpath)
            if not name.endswith(b".tmp")
            and name != b"sock"
            and not (dirpath.endswith(b"/plain") and name.startswith(b"tab"))
        )
        total, entries = index.listdir(dirpath.lstrip(b"/"), 0, 10_000)
        assert [path_bytes(e.name) for e in entries] == names, dirpath
        assert total == len(names)
    # The folders above the configured path are implied, one level at a time.
    _, [first] = index.listdir(b"")
    assert first.path == "/" + os.fsencode(awkward).split(b"/")[1].decode() and first.number is None


def test_several_paths_form_the_top_level_run(tmp_path: Path, storage_root: Path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text(name)
    (tmp_path / "c.txt").write_text("c")
    paths = [str(tmp_path / "b"), str(tmp_path / "c.txt"), str(tmp_path / "a")]
    report = succeeded(execute(backup_job("files", {"paths": paths}, storage_root)))

    index = index_of(storage_root, report)
    rel = os.fsencode(tmp_path).lstrip(b"/")
    _, entries = index.listdir(rel)
    assert [(e.name, e.type, e.number) for e in entries] == [
        ("a", "directory", 0),
        ("b", "directory", 1),
        ("c.txt", "file", 2),
    ]
    assert [e.name for e in index.listdir(rel + b"/a")[1]] == ["x"]
    assert index.entry_at(rel + b"/b/x").size == 1
    listed = tar_listing(storage_root / report["location"] / "data.tar")
    assert set(walk_index(index)) == set(listed)


def test_the_index_writer_keeps_memory_flat():
    def peak(entries: int) -> int:
        tracemalloc.start()
        try:
            writer = IndexWriter(_Discard(), kind="files")  # type: ignore[arg-type]
            writer.begin_run(None)
            folder = writer.add(b"top", b"d", 0o755, 0, 0)
            for i in range(entries):
                if i % 1000 == 0:
                    writer.begin_run(folder)
                writer.add(b"file-%08d.txt" % i, b"-", 0o644, i, 1_600_000_000 + i)
            writer.close()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(20_000), peak(200_000)
    assert large < 2 * small, (small, large)


class _Discard:
    """A sink that keeps nothing, so only the writer's own memory is measured."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def test_a_failure_writing_the_index_fails_the_backup_and_leaves_no_point(
    awkward: Path, storage_root: Path, monkeypatch: pytest.MonkeyPatch
):
    def full(self: IndexWriter) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(IndexWriter, "_flush_block", full)
    job = backup_job("files", {"paths": [str(awkward)]}, storage_root)
    report = execute(job)

    assert report["status"] == "failed" and report["error_class"] == "disk_full"
    folder = storage_root / job["destination"]
    assert not folder.exists() and not folder.with_name(".partial-" + folder.name).exists()


def test_plugins_without_an_index_write_none(tmp_path: Path, storage_root: Path):
    job = backup_job("command", {"backup_argv": [tool("echo"), "hi"]}, storage_root)
    report = succeeded(execute(job))
    assert "index" not in report and "index" not in report["manifest"]
    assert not (storage_root / report["location"] / file_index.FILE_NAME).exists()


# --- format 2 (incremental backups, issue #15) -------------------------------------------


def test_an_incrementals_index_reads_in_the_portal_exactly_as_a_fulls_of_the_same_tree(
    awkward: Path, storage_root: Path
):
    options = {"paths": [str(awkward)], "exclude": ["*.tmp"]}
    points = Points(options, storage_root)
    points.backup()
    (awkward / "plain" / "with space.txt").write_text("edited, a hard link's data now\n")
    (awkward / "secret").unlink()
    incremental = points.backup()
    full = succeeded(execute(backup_job("files", options, storage_root)))

    assert incremental["level"] == "incremental" and incremental["index"]["format"] == 2
    indexed = walk_index(index_of(storage_root, incremental))
    assert indexed == walk_index(index_of(storage_root, full))
    listed = tar_listing(storage_root / full["location"] / "data.tar")
    assert {path: (letter, permissions(letter, mode), size, link)
            for path, (letter, mode, size, link) in indexed.items()} == listed
    # Search and look-ups go through the same reader.
    index = index_of(storage_root, incremental)
    found = [entry.path for entry in index.search(name_pattern("caf*"), 10)]
    assert found == [f"{awkward}/plain/caf\\351"]
    assert index.entry_at(os.fsencode(awkward / "plain" / "é-utf8.txt").lstrip(b"/")).size == 5


def write_entries(path: Path, version: int) -> None:
    with open(path, "wb") as out:
        writer = IndexWriter(out, "files", version=version)
        writer.begin_run(None)
        top = writer.add(b"srv/app", file_index.DIRECTORY, 0o755, 0, 1_700_000_000)
        writer.begin_run(top)
        for i in range(5000):  # two blocks
            writer.add(b"f%05d" % i, file_index.FILE, 0o644, i, 1_700_000_000 + i, mtime_nsec=i, inode=i)
        writer.add(b"link", file_index.SYMLINK, 0o777, 0, 1_700_000_000, b"f00001")
        writer.add(b"zz", file_index.HARDLINK, 0o644, 0, 1_700_000_000, b"srv/app/f00002")
        writer.close()


def test_format_1_indexes_already_stored_read_as_before(tmp_path: Path):
    write_entries(tmp_path / "one.bpi", 1)
    write_entries(tmp_path / "two.bpi", 2)
    one, two = FileIndex(tmp_path / "one.bpi"), FileIndex(tmp_path / "two.bpi")

    assert (tmp_path / "one.bpi").read_bytes()[:8] == b"BPIDX\x00\x01\n"
    assert (one.meta["format"], two.meta["format"]) == (1, 2)
    assert "chain" not in one.meta and (two.meta["level"], two.meta["chain"]) == ("full", [])
    assert one.listdir(b"srv/app", 4990, 20) == two.listdir(b"srv/app", 4990, 20)
    assert one.listdir(b"") == two.listdir(b"")
    pattern = name_pattern("f0499?")
    assert list(one.search(pattern, 20)) == list(two.search(pattern, 20))
    assert one.entry_at(b"srv/app/zz") == two.entry_at(b"srv/app/zz")
    reader = IndexReader(tmp_path / "two.bpi")
    block, k = reader.locate(reader.lookup(b"srv/app/f04500"))
    assert [column[k] for column in block.extra] == [4500, 0, 4500, 0]
    assert IndexReader(tmp_path / "one.bpi").locate(1)[0].extra is None


def test_a_format_2_block_without_its_new_columns_is_damaged(tmp_path: Path):
    write_entries(tmp_path / "one.bpi", 1)
    data = (tmp_path / "one.bpi").read_bytes()
    (tmp_path / "lying.bpi").write_bytes(b"BPIDX\x00\x02\n" + data[8:])

    index = FileIndex(tmp_path / "lying.bpi")  # the footer holds together
    with pytest.raises(IndexError_, match="truncated block"):
        index.listdir(b"srv/app")


def test_an_index_of_another_format_is_refused(tmp_path: Path):
    write_entries(tmp_path / "two.bpi", 2)
    data = (tmp_path / "two.bpi").read_bytes()
    (tmp_path / "three.bpi").write_bytes(b"BPIDX\x00\x03\n" + data[8:])

    with pytest.raises(IndexError_, match="not an index of format 1 or 2"):
        FileIndex(tmp_path / "three.bpi")


def test_a_block_the_footer_places_outside_the_file_is_damaged_not_read(tmp_path: Path):
    # Reading it would first allocate whatever the footer claims (up to 4 GiB a block).
    write_entries(tmp_path / "two.bpi", 2)
    data = (tmp_path / "two.bpi").read_bytes()
    offset, length, end = file_index.TRAILER.unpack(data[-file_index.TRAILER.size :])
    footer = bytearray(zlib.decompress(data[offset : offset + length]))
    blocks = struct.unpack_from("<I", footer)[0]
    struct.pack_into("<I", footer, 4 + 8 * blocks, 0xFFFFFFF0)  # the first block's compressed length
    packed = zlib.compress(bytes(footer))
    trailer = file_index.TRAILER.pack(offset, len(packed), end)
    (tmp_path / "lying.bpi").write_bytes(data[:offset] + packed + trailer)

    index = FileIndex(tmp_path / "lying.bpi")
    with pytest.raises(IndexError_, match="outside the file"):
        index.listdir(b"srv/app")
