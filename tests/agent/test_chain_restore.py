"""Restoring an incremental point from its chain: everything verified before anything is written.

A damaged member, a point's index that is not the recorded one, or a chain that is
not the one the point was taken on fails the job with checksum_mismatch and leaves
the target as it was; selective restores and restore tests work on chains as on fulls.
"""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from backup_agent import file_index
from backup_agent.executor import Executor, new_context
from backup_agent.file_index import IndexReader
from backup_agent.progress import Progress
from backup_agent.storage import FilesystemStorage

from .helpers import (
    Points,
    allow_for,
    assert_same_tree,
    backup_job,
    config,
    execute,
    point_ref,
    restore_job,
    snapshot,
    succeeded,
)


def make_tree(top: Path) -> None:
    (top / "data" / "deep").mkdir(parents=True)
    (top / "data").chmod(0o750)
    (top / "data" / "a.txt").write_text("alpha\n")
    (top / "data" / "b.txt").write_text("beta\n")
    (top / "data" / "deep" / "c.bin").write_bytes(os.urandom(50_000))
    (top / "docs").mkdir()
    (top / "docs" / "readme").write_text("read me\n")
    os.symlink("readme", top / "docs" / "link")
    os.link(top / "data" / "a.txt", top / "docs" / "hard-a")
    (top / "other.txt").write_text("other\n")


@pytest.fixture
def chain(tmp_path: Path, storage_root: Path) -> tuple[Path, Points, list[dict]]:
    """A full and two incrementals of a small tree, with the snapshot of each moment."""
    top = tmp_path / "src" / "app"
    top.mkdir(parents=True)
    make_tree(top)
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    snapshots = [snapshot(top)]
    (top / "data" / "b.txt").write_text("beta, edited\n")
    (top / "docs" / "new.txt").write_text("new\n")
    points.backup()
    snapshots.append(snapshot(top))
    (top / "other.txt").unlink()
    (top / "docs" / "readme").rename(top / "docs" / "readme.md")
    points.backup()
    snapshots.append(snapshot(top))
    return top, points, snapshots


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def listing(folder: Path) -> list[tuple]:
    """Every entry under ``folder`` with its content: what "untouched" means."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            content = Path(path).read_bytes() if os.path.isfile(path) else None
            found.append((os.path.relpath(path, folder), os.lstat(path).st_mode, content))
    return sorted(found)


@pytest.fixture
def occupied(tmp_path: Path) -> Path:
    target = tmp_path / "occupied"
    (target / "keep").mkdir(parents=True)
    (target / "keep" / "data.txt").write_text("existing data\n")
    return target


def assert_refused(report: dict, target: Path, before: list[tuple], damaged: str, *words: str) -> None:
    """Failed checksum_mismatch, naming ``damaged`` (a location) for the portal, the target as it was."""
    assert report["status"] == "failed"
    assert report["error_class"] == "checksum_mismatch", report["error"]
    assert report["damaged"] == [damaged]
    assert report["error"].startswith("checksum mismatch: ")
    for word in words:
        assert word in report["error"], report["error"]
    assert listing(target) == before


def test_a_damaged_chain_member_fails_later_points_and_leaves_the_target_untouched(
    chain, storage_root: Path, occupied: Path
):
    top, points, _ = chain
    flip_middle_byte(points.location(0) / "data.tar")
    before = listing(occupied)

    full = points.reports[0]["location"]
    for n in (1, 2):
        report = execute(points.restore_job(n, occupied, overwrite=True))
        assert_refused(report, occupied, before, full, f"chain member {full} (")
        test = execute(points.restore_test_job(n))
        assert (test["error_class"], test["damaged"]) == ("checksum_mismatch", [full])


def test_a_damaged_point_of_its_own_fails_the_same_way(chain, occupied: Path):
    top, points, _ = chain
    flip_middle_byte(points.location(2) / "data.tar")
    before = listing(occupied)

    report = execute(points.restore_job(2, occupied, overwrite=True))

    assert_refused(report, occupied, before, points.reports[2]["location"], points.reports[2]["location"])
    # A full names itself the same way.
    flip_middle_byte(points.location(0) / "data.tar")
    report = execute(points.restore_job(0, occupied, overwrite=True))
    assert_refused(report, occupied, before, points.reports[0]["location"])


def test_a_member_changed_between_its_check_and_its_reading_fails_the_restore_untouched(
    chain, occupied: Path, monkeypatch: pytest.MonkeyPatch
):
    top, points, _ = chain
    full = points.reports[0]["location"]
    verify = FilesystemStorage.verify

    def verify_then_rot(self, location, *args, **kwargs):
        found = verify(self, location, *args, **kwargs)
        if location == full:  # bit rot right after the first pass
            flip_middle_byte(points.location(0) / "data.tar")
        return found

    monkeypatch.setattr(FilesystemStorage, "verify", verify_then_rot)
    before = listing(occupied)

    report = execute(points.restore_job(2, occupied, overwrite=True))

    assert_refused(report, occupied, before, full, "changed during the restore")


def test_a_new_target_is_not_even_created_when_a_member_is_damaged(chain, tmp_path: Path):
    top, points, _ = chain
    flip_middle_byte(points.location(1) / "data.tar")
    target = tmp_path / "new-target"

    report = execute(points.restore_job(2, target))

    assert report["error_class"] == "checksum_mismatch"
    assert not target.exists()


@pytest.mark.parametrize(
    "craft",
    [
        # Another point of the client, checksum and all, in place of the full.
        lambda points, sent: [points.ref(1), *sent[1:]],
        lambda points, sent: sent[1:],  # the full left out
        lambda points, sent: [*sent, points.ref(2)],  # one too many
        lambda points, sent: list(reversed(sent)),  # out of order
        lambda points, sent: [{**sent[0], "sha256": "00" * 32}, *sent[1:]],  # a checksum the portal made up
    ],
    ids=["swapped", "missing", "extra", "reversed", "made-up"],
)
def test_a_chain_that_is_not_the_points_own_is_refused_before_anything_is_read(
    chain, occupied: Path, craft
):
    top, points, _ = chain
    job = points.restore_job(2, occupied, overwrite=True)
    job["chain"] = craft(points, job["chain"])
    before = listing(occupied)

    report = execute(job)

    # The members may be sound: it is the point that cannot be rebuilt from what the catalog says.
    assert_refused(report, occupied, before, points.reports[2]["location"], "chain member", "is not the base")
    assert "checksum verified" not in report["log_tail"]  # refused before any data was hashed


def test_a_full_sent_with_a_chain_is_refused(chain, occupied: Path):
    top, points, _ = chain
    job = points.restore_job(0, occupied, overwrite=True)
    job["chain"] = [points.ref(1)]
    before = listing(occupied)

    assert_refused(execute(job), occupied, before, points.reports[0]["location"], "chain member")


def test_the_points_index_must_be_the_recorded_one(chain, occupied: Path):
    top, points, _ = chain
    before = listing(occupied)
    index = points.location(2) / file_index.FILE_NAME

    point = points.reports[2]["location"]
    flip_middle_byte(index)
    report = execute(points.restore_job(2, occupied, overwrite=True))
    assert_refused(report, occupied, before, point, "index.bpi")
    index.unlink()
    report = execute(points.restore_job(2, occupied, overwrite=True))
    assert_refused(report, occupied, before, point, "index.bpi is missing")


def test_an_incremental_point_without_its_chain_is_an_invalid_job(chain, tmp_path: Path):
    top, points, _ = chain
    job = points.restore_job(2, tmp_path / "t")
    job["chain"] = []

    report = execute(job)

    assert (report["status"], report["error_class"]) == ("failed", "invalid_job")
    assert "without its chain" in report["error"]


def test_restore_test_of_an_incremental_restores_the_chain_and_compares_the_whole_tree(chain):
    top, points, _ = chain

    report = succeeded(execute(points.restore_test_job(2)))

    facts, recorded = report["manifest"]["facts"], points.reports[2]["manifest"]["facts"]
    assert report["manifest"]["compared"] is True
    assert (facts["members"], facts["total_size"]) == (recorded["members"], recorded["total_size"])
    assert recorded["stored_total_size"] < recorded["total_size"]


def test_restore_progress_counts_every_member_verified_then_read(chain, tmp_path: Path):
    top, points, _ = chain
    phases: list[int | None] = []

    class Recording(Progress):
        def phase(self, total: int | None) -> None:
            phases.append(total)
            super().phase(total)

    job = points.restore_job(2, tmp_path / "t")
    cfg = config(allow=allow_for(job))
    succeeded(Executor(cfg).execute(job, new_context(job, cfg), Recording()))

    assert phases == [
        sum(report["stored_size"] for report in points.reports),
        sum(report["size"] for report in points.reports),
    ]


# --- selective restore -------------------------------------------------------------------


def test_selective_restore_of_an_incremental_takes_each_file_from_where_it_lives(chain, tmp_path: Path):
    top, points, snapshots = chain
    target = tmp_path / "picked"
    paths = [
        str(top / "data" / "deep" / "c.bin"),  # unchanged since the full
        str(top / "data" / "b.txt"),  # changed in the first incremental
        str(top / "docs"),  # a folder mixing all three points, a symlink and a hard link
        str(top / "data" / "a.txt"),  # the hard link's file, which it needs
    ]

    report = succeeded(execute(points.restore_job(2, target, paths=paths)))

    got = snapshot(target / str(top).lstrip("/"))
    want = snapshots[2]
    rel = [b"data/deep/c.bin", b"data/b.txt", b"data/a.txt"]
    rel += [path for path in want if path.startswith(b"docs")]
    ancestors = [b".", b"data", b"data/deep"]
    assert sorted(got) == sorted(rel + ancestors)
    assert_same_tree({p: want[p] for p in rel}, {p: got[p] for p in rel})
    assert got[b"data"][1] == 0o750  # the folder above a selected file has its archived mode
    assert report["manifest"]["facts"]["selected"] == 4
    assert report["manifest"]["facts"]["members"] == len(rel)


def test_a_path_deleted_before_the_point_is_not_in_it(chain, tmp_path: Path):
    top, points, _ = chain
    job = points.restore_job(2, tmp_path / "t", paths=[str(top / "other.txt")])

    report = execute(job)

    assert (report["status"], report["error_class"]) == ("failed", "invalid_job")
    assert "is not in this backup" in report["error"]
    # In the point before, it is.
    succeeded(execute(points.restore_job(1, tmp_path / "t1", paths=[str(top / "other.txt")])))


def test_a_renamed_file_comes_back_under_its_new_name_only(chain, tmp_path: Path):
    top, points, snapshots = chain
    target = tmp_path / "t"

    succeeded(execute(points.restore_job(2, target)))

    docs = target / str(top).lstrip("/") / "docs"
    assert (docs / "readme.md").read_text() == "read me\n" and not (docs / "readme").exists()
    assert_same_tree(snapshots[2], snapshot(target / str(top).lstrip("/")))


# --- other plugins, memory -------------------------------------------------------------------


def test_a_plugin_without_incrementals_refuses_a_chain(tmp_path: Path, storage_root: Path):
    command = {"backup_argv": [shutil.which("echo"), "dump"], "restore_argv": [shutil.which("cat")]}
    report = succeeded(execute(backup_job("command", command, storage_root)))
    job = restore_job("command", command, storage_root, point_ref(report, 2), str(tmp_path / "t"))
    job["chain"] = [point_ref(report, 1)]

    result = execute(job)

    assert (result["status"], result["error_class"]) == ("failed", "invalid_job")
    assert "restores full backups only" in result["error"]


def chain_restore_peak(tmp_path: Path, storage_root: Path, count: int) -> int:
    top = tmp_path / f"tree-{count}"
    for i in range(count):
        folder = top / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}").touch()
    points = Points({"paths": [str(top)]}, storage_root)
    points.backup()
    (top / "d0" / "f000000").write_text("changed")
    points.backup()
    job = points.restore_job(1, tmp_path / f"restored-{count}", paths=[str(top / "d1" / "f000001")])
    tracemalloc.start()
    try:
        report = succeeded(execute(job))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["manifest"]["facts"]["members"] == 1
    return peak


def test_restoring_one_file_of_a_chain_holds_the_same_memory_from_4500_or_18000_entries(
    tmp_path: Path, storage_root: Path, monkeypatch: pytest.MonkeyPatch
):
    # One block of the point's index cached (the default is a few): what could grow beyond it would
    # be per file. Both sizes are past one block (4,096 entries).
    monkeypatch.setattr(IndexReader, "BLOCK_CACHE", 1)
    small = chain_restore_peak(tmp_path, storage_root, 4_500)
    large = chain_restore_peak(tmp_path, storage_root, 18_000)

    # The point's index is read forward with a cursor per folder (a dict of the tree would add
    # some 2 MB here); tarfile keeps no member (files._Unkept).
    assert large < small + 500_000, (small, large)
