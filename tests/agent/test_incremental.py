"""Incremental files backups (issue #15): only what changed is archived, every point restores exactly.

Real trees on disk, backed up and restored by the agent's executor as the portal's
jobs ask (helpers.Points plays the portal's part: each backup an incremental on the
newest point, each restore sent with its chain). Every point is restored and compared,
entry for entry and byte for byte, with a snapshot of the tree taken at its backup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest

from backup_agent import file_index
from backup_agent.context import JobContext
from backup_agent.file_index import IndexReader, IndexWriter
from backup_agent.plugins import files

from .helpers import Points, assert_same_tree, backup_job, execute, point_ref, snapshot, succeeded


def build(top: Path) -> None:
    """The tree of the full: files, folders, a symlink, hard links, names that are not UTF-8."""
    raw = os.fsencode(top)
    (top / "docs" / "sub").mkdir(parents=True)
    (top / "docs" / "readme.txt").write_text("hello\n")
    (top / "docs" / "guide.txt").write_bytes(os.urandom(200_000))
    (top / "docs" / "sub" / "deep.txt").write_text("deep\n")
    (top / "data.bin").write_bytes(os.urandom(100_000))
    (top / "script.sh").write_text("#!/bin/sh\n")
    (top / "script.sh").chmod(0o755)
    (top / "secret").write_text("s\n")
    (top / "secret").chmod(0o600)
    os.symlink("docs/readme.txt", top / "link")
    (top / "hard-a").write_text("one inode, several names\n")
    (top / "links").mkdir()
    os.link(top / "hard-a", top / "links" / "hard-b")
    with open(os.path.join(raw, b"caf\xe9"), "wb") as fh:
        fh.write(b"latin-1 name\n")
    os.mkdir(os.path.join(raw, b"dir-\xff"))
    with open(os.path.join(raw, b"dir-\xff", b"inner"), "wb") as fh:
        fh.write(b"in a folder whose name is not UTF-8\n")
    (top / "empty").mkdir()
    (top / "becomes-folder").write_text("a file today\n")
    (top / "becomes-file").mkdir()
    (top / "becomes-file" / "x").write_text("x\n")


def day_1(top: Path) -> None:
    """An edit, an addition, a deletion, a rename, a mode change, a symlink retarget, type swaps."""
    (top / "docs" / "readme.txt").write_text("hello, edited\n")
    (top / "docs" / "new.txt").write_text("new on day 1\n")
    (top / "script.sh").unlink()
    (top / "data.bin").rename(top / "data-renamed.bin")
    (top / "secret").chmod(0o640)
    (top / "link").unlink()
    os.symlink("docs/guide.txt", top / "link")
    (top / "becomes-folder").unlink()
    (top / "becomes-folder").mkdir()
    (top / "becomes-folder" / "inside.txt").write_text("a folder now\n")
    shutil.rmtree(top / "becomes-file")
    (top / "becomes-file").write_text("a file now\n")
    with open(os.path.join(os.fsencode(top), b"new-\xfe"), "wb") as fh:
        fh.write(b"added, not UTF-8\n")


def day_2(top: Path) -> None:
    """A folder renamed, a third name for a file, a non-UTF-8 rename, a folder deleted, an edit
    that keeps the size and the mtime (only the ctime tells)."""
    raw = os.fsencode(top)
    (top / "docs").rename(top / "documents")
    os.link(top / "hard-a", top / "links" / "hard-c")
    os.rename(os.path.join(raw, b"caf\xe9"), os.path.join(raw, b"caf\xe9-2"))
    shutil.rmtree(os.path.join(raw, b"dir-\xff"))
    path = top / "data-renamed.bin"
    before = os.stat(path)
    data = bytearray(path.read_bytes())
    data[500:510] = os.urandom(10)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def day_4(top: Path) -> None:
    """The first name of a hard-linked file deleted, an old name back with other content, a folder's mode."""
    (top / "hard-a").unlink()
    (top / "script.sh").write_text("#!/bin/sh\necho back\n")
    (top / "documents").chmod(0o700)


def restored(target: Path, top: Path) -> Path:
    return target / str(top).lstrip("/")


def regular_members(archive: Path) -> set[str]:
    """The names of the regular files whose data an archive holds (tar's own reading of it)."""
    with tarfile.open(archive, encoding="utf-8", errors="surrogateescape") as tar:
        return {member.name for member in tar if member.isreg()}


def tar_types(archive: Path) -> dict[str, str]:
    with tarfile.open(archive, encoding="utf-8", errors="surrogateescape") as tar:
        return {member.name: member.type.decode() for member in tar}


@pytest.fixture
def top(tmp_path: Path) -> Path:
    top = tmp_path / "src" / "app"
    top.mkdir(parents=True)
    build(top)
    return top


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_every_point_of_a_chain_restores_exactly_the_tree_of_its_moment(
    top: Path, storage_root: Path, tmp_path: Path, compression: str
):
    points = Points({"paths": [str(top)]}, storage_root, compression)
    snapshots = []
    for change in (None, day_1, day_2, None, day_4):
        if change is not None:
            change(top)
        report = points.backup()
        snapshots.append(snapshot(top))
        assert report["manifest"]["facts"]["members"] == len(snapshots[-1])

    assert [r["level"] for r in points.reports] == ["full"] + ["incremental"] * 4
    for n, expected in enumerate(snapshots):
        target = tmp_path / "restored" / f"point-{n}"
        report = succeeded(execute(points.restore_job(n, target)))

        assert_same_tree(expected, snapshot(restored(target, top)))
        facts, recorded = report["manifest"]["facts"], points.reports[n]["manifest"]["facts"]
        assert (facts["members"], facts["total_size"]) == (recorded["members"], recorded["total_size"]), n
        # Nothing but the tree: no staging left behind, nothing beside the configured path.
        assert [p.name for p in target.iterdir()] == [str(top).strip("/").split("/")[0]]


def test_an_incremental_archives_only_new_and_changed_files_and_indexes_the_whole_tree(
    top: Path, storage_root: Path
):
    points = Points({"paths": [str(top)]}, storage_root)
    full = points.backup()
    day_1(top)
    first = points.backup()

    rel = str(top).lstrip("/")
    assert regular_members(points.location(1) / "data.tar") == {
        f"{rel}/{name}"
        for name in (
            "docs/readme.txt",
            "docs/new.txt",
            "data-renamed.bin",
            "secret",
            "becomes-folder/inside.txt",
            "becomes-file",
            "new-\udcfe",
        )
    }
    # Every folder, symlink and hard link is in it all the same (metadata only), in tar's own types.
    types = tar_types(points.location(1) / "data.tar")
    assert types[rel] == types[f"{rel}/empty"] == types[f"{rel}/docs/sub"] == tarfile.DIRTYPE.decode()
    assert types[f"{rel}/link"] == tarfile.SYMTYPE.decode()
    assert types[f"{rel}/links/hard-b"] == tarfile.LNKTYPE.decode()
    assert f"{rel}/docs/guide.txt" not in types and f"{rel}/hard-a" not in types

    facts = first["manifest"]["facts"]
    assert facts["unchanged"] == 5  # guide.txt, deep.txt, hard-a, caf\xe9, dir-\xff/inner
    assert facts["stored_members"] == len(types) == facts["members"] - facts["unchanged"]
    with tarfile.open(points.location(1) / "data.tar") as tar:
        assert facts["stored_total_size"] == sum(member.size for member in tar if member.isreg())
    assert first["size"] < full["size"] - 200_000  # guide.txt is not in it
    assert (first["level"], first["base"]) == ("incremental", 1)
    manifest = first["manifest"]
    assert (manifest["level"], manifest["base"]) == (
        "incremental",
        {"id": 1, "location": full["location"], "sha256": full["sha256"]},
    )
    assert (full["level"], full["base"], full["manifest"]["level"], full["manifest"]["base"]) == (
        "full",
        None,
        "full",
        None,
    )


def test_the_index_records_where_each_file_lives_and_the_chain(top: Path, storage_root: Path):
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    day_1(top)
    points.backup()
    day_2(top)
    points.backup()
    points.backup()  # nothing changed

    rel = os.fsencode(top).lstrip(b"/")
    shas = [r["sha256"] for r in points.reports]
    for n, level in enumerate(("full", "incremental", "incremental", "incremental")):
        depth = n
        reader = IndexReader(points.location(n) / file_index.FILE_NAME)
        assert reader.format == 2 and points.reports[n]["index"]["format"] == 2
        assert (reader.meta["level"], reader.meta["depth"], reader.meta["chain"]) == (level, depth, shas[:n])

    def origin(n: int, path: bytes) -> int:
        reader = IndexReader(points.location(n) / file_index.FILE_NAME)
        block, k = reader.locate(reader.lookup(rel + b"/" + path))
        return block.extra[3][k]

    assert origin(1, b"docs/guide.txt") == 1 and origin(1, b"docs/readme.txt") == 0
    assert origin(2, b"documents/guide.txt") == 0  # its folder was renamed: a new path
    assert origin(3, b"documents/guide.txt") == 1
    assert origin(3, b"links/hard-b") == 0  # a hard link: every point holds it
    assert origin(3, b"documents/sub/deep.txt") == 1
    assert points.reports[3]["manifest"]["facts"]["stored_total_size"] == 0


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_taken_again(top: Path, storage_root: Path):
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    path = top / "docs" / "guide.txt"
    before = os.stat(path)
    with open(path, "r+b") as fh:
        fh.write(b"X" * 100)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    points.backup()

    assert f"{str(top).lstrip('/')}/docs/guide.txt" in regular_members(points.location(1) / "data.tar")


def test_a_file_changed_just_before_the_base_walked_it_is_taken_again(top: Path, storage_root: Path):
    # Changed in the same clock tick as the base's walk read it, a file could change again
    # unseen: its ctime so close to the base's start makes it count as changed.
    points = Points({"paths": [str(top)]}, storage_root)
    time.sleep(Points.SETTLE)
    (top / "docs" / "readme.txt").write_text("written right before the full\n")
    report = succeeded(execute(points.job()))  # at once
    points.reports.append(report)
    points.backup()

    members = regular_members(points.location(1) / "data.tar")
    assert f"{str(top).lstrip('/')}/docs/readme.txt" in members
    assert f"{str(top).lstrip('/')}/docs/guide.txt" not in members


def test_hard_links_stay_one_file_across_the_chain(top: Path, storage_root: Path, tmp_path: Path):
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    points.backup()  # hard-a unchanged: its data stays in the full, hard-b links to it
    os.link(top / "hard-a", top / "links" / "hard-c")
    points.backup()
    expected = snapshot(top)

    types = tar_types(points.location(1) / "data.tar")
    assert f"{str(top).lstrip('/')}/hard-a" not in types
    assert types[f"{str(top).lstrip('/')}/links/hard-b"] == tarfile.LNKTYPE.decode()
    for n in (1, 2):
        target = tmp_path / f"restored-{n}"
        succeeded(execute(points.restore_job(n, target)))
        base = restored(target, top)
        assert os.stat(base / "hard-a").st_ino == os.stat(base / "links" / "hard-b").st_ino
    assert_same_tree(expected, snapshot(restored(tmp_path / "restored-2", top)))
    assert os.stat(base / "links" / "hard-c").st_nlink == 3


def test_several_configured_paths_and_a_file_among_them(tmp_path: Path, storage_root: Path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_bytes(os.urandom(5000))
    (tmp_path / "c.txt").write_text("c")
    paths = [str(tmp_path / "b"), str(tmp_path / "c.txt"), str(tmp_path / "a")]
    points = Points({"paths": paths}, storage_root)
    points.backup()
    (tmp_path / "b" / "x").write_text("changed")
    report = points.backup()

    assert report["manifest"]["facts"]["unchanged"] == 2  # a/x and c.txt
    target = tmp_path / "restored"
    succeeded(execute(points.restore_job(1, target)))
    for name in ("a/x", "b/x", "c.txt"):
        assert restored(target, tmp_path / name).read_bytes() == (tmp_path / name).read_bytes()


# --- when a planned incremental is a full -----------------------------------------------


def _damage_index(points: Points) -> None:
    path = points.location(0) / file_index.FILE_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _unreadable_recorded_index(points: Points) -> None:
    # The catalog's record matches, but the file does not hold together (a crafted or buggy index).
    path = points.location(0) / file_index.FILE_NAME
    path.write_bytes(file_index.MAGIC + b"\0" * 40)
    _rerecord(points, 0)


def _rerecord(points: Points, n: int) -> None:
    data = (points.location(n) / file_index.FILE_NAME).read_bytes()
    record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    points.reports[n]["index"] = {**points.reports[n]["index"], **record}


def _other_options(points: Points) -> None:
    points.reports[0]["manifest"]["options"] = {**points.options, "exclude": ["*.tmp"]}


def _other_plugin(points: Points) -> None:
    points.reports[0]["manifest"]["plugin"] = "command"


def _deep_chain(depth: int):
    def craft(points: Points) -> None:
        # A base already at the end of the longest chain (crafted: 250 real backups would be slow).
        path = points.location(0) / file_index.FILE_NAME
        with open(path, "wb") as out:
            writer = IndexWriter(out, "files", level="incremental", depth=depth, chain=["ab" * 32] * depth)
            writer.close()
        _rerecord(points, 0)

    return craft


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda p: (p.location(0) / "data.tar").unlink(), "the base's data is missing"),
        (lambda p: (p.location(0) / file_index.FILE_NAME).unlink(), "index.bpi cannot be used"),
        (_damage_index, "index.bpi cannot be used (checksum mismatch:"),
        (_unreadable_recorded_index, "the base's index is damaged"),
        (_other_options, "was taken with other options"),
        (_other_plugin, "was taken by another plugin"),
        (_deep_chain(250), "the chain already holds 250 incrementals"),
    ],
    ids=["missing-data", "missing-index", "damaged-index", "unreadable-index", "options", "plugin", "depth"],
)
def test_a_base_that_cannot_be_built_on_forces_a_full_and_the_log_says_why(
    top: Path, storage_root: Path, tmp_path: Path, spoil, reason: str
):
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    spoil(points)
    (top / "docs" / "readme.txt").write_text("changed\n")
    report = points.backup()

    assert (report["level"], report["base"], report["manifest"]["level"]) == ("full", None, "full")
    assert "taking a full backup: " in report["log_tail"] and reason in report["log_tail"], report["log_tail"]
    assert "unchanged" not in report["manifest"]["facts"]
    reader = IndexReader(points.location(1) / file_index.FILE_NAME)
    assert (reader.meta["level"], reader.meta["depth"], reader.meta["chain"]) == ("full", 0, [])
    # A full restores without a chain.
    target = tmp_path / "restored"
    succeeded(execute(points.restore_job(1, target)))
    assert_same_tree(snapshot(top), snapshot(restored(target, top)))


def test_a_base_one_short_of_the_longest_chain_still_takes_an_incremental(top: Path, storage_root: Path):
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    _deep_chain(249)(points)
    report = points.backup()

    assert report["level"] == "incremental"
    reader = IndexReader(points.location(1) / file_index.FILE_NAME)
    assert reader.meta["depth"] == file_index.MAX_CHAIN_DEPTH == 250
    assert reader.meta["chain"] == ["ab" * 32] * 249 + [points.reports[0]["sha256"]]


def test_a_base_with_a_format_1_index_forces_a_full(
    top: Path, storage_root: Path, monkeypatch: pytest.MonkeyPatch
):
    points = Points({"paths": [str(top)]}, storage_root)
    with monkeypatch.context() as patch:
        patch.setattr(file_index, "FORMAT", 1)  # as an agent before incrementals wrote it
        full = points.backup()
    assert full["index"]["format"] == 1
    report = points.backup()

    assert report["level"] == "full"
    assert "taking a full backup: the base's index is format 1 (taken before incremental backups)" in (
        report["log_tail"]
    )


def test_the_portals_reason_for_a_full_is_in_the_log(top: Path, storage_root: Path):
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    job = points.job(level="full")
    job["level_reason"] = "the chain's full is 7 days old"
    report = points.backup(job=job)

    assert report["level"] == "full"
    assert "taking a full backup: the chain's full is 7 days old" in report["log_tail"]


def test_a_job_of_an_older_portal_takes_a_full_as_before(top: Path, storage_root: Path):
    report = succeeded(execute(backup_job("files", {"paths": [str(top)]}, storage_root)))

    assert (report["level"], report["base"]) == ("full", None)
    assert "taking a full" not in report["log_tail"]


def test_a_plugin_without_incrementals_takes_a_full(tmp_path: Path, storage_root: Path):
    command = {"backup_argv": [shutil.which("echo"), "dump"], "restore_argv": [shutil.which("cat")]}
    first = succeeded(execute(backup_job("command", command, storage_root)))
    job = backup_job("command", command, storage_root)
    job.update(level="incremental", base=point_ref(first, 1))
    report = succeeded(execute(job))

    assert report["level"] == "full"
    assert "taking a full backup: the command plugin takes full backups only" in report["log_tail"]


# --- memory ------------------------------------------------------------------------------


class Discard:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def incremental_peak(tmp_path: Path, count: int) -> int:
    tree = tmp_path / f"tree-{count}"
    for i in range(count):
        folder = tree / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}").touch()
    base = tmp_path / f"base-{count}.bpi"
    time.sleep(Points.SETTLE)
    with open(base, "wb") as out:
        ctx = JobContext(job_id=1, client="memory", index=IndexWriter(out, "files"))
        files.backup({"paths": [str(tree)]}, Discard(), ctx)
        ctx.index.close()
    (tree / "d00" / "f000000").write_text("changed")
    time.sleep(Points.SETTLE)
    ctx = JobContext(job_id=2, client="memory", index=IndexWriter(Discard(), "files"))  # type: ignore[arg-type]
    # One block cached (the default is a few): what could grow beyond it would be per file.
    ctx.base_index = IndexReader(base, block_cache=1)
    tracemalloc.start()
    try:
        facts = files.backup({"paths": [str(tree)]}, Discard(), ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (facts["members"], facts["unchanged"]) == (count + 21, count - 1)
    return peak


def test_an_incremental_of_18000_files_holds_no_more_memory_than_of_4500(tmp_path: Path):
    # Both past one block (4,096 entries) of the base's index and of the new one.
    small = incremental_peak(tmp_path, 4_500)
    large = incremental_peak(tmp_path, 18_000)

    # The base's index is read a block at a time, with a cursor per folder: nothing per file
    # (a dict of the tree would add some 2 MB here).
    assert large < small + 500_000, (small, large)


def test_a_level_the_agent_does_not_know_is_an_invalid_job(top: Path, storage_root: Path):
    job = backup_job("files", {"paths": [str(top)]}, storage_root)
    job["level"] = "differential"

    report = execute(job)

    assert (report["status"], report["error_class"]) == ("failed", "invalid_job")
    assert "differential" in report["error"]
