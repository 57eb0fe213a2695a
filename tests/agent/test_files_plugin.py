"""The files plugin: a faithful, safe, plain-tar round trip."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from backup_agent.context import JobContext
from backup_agent.errors import InvalidOptions
from backup_agent.plugins import files

from .helpers import backup_job, backup_ref, execute, other_job, restore_job, succeeded

NON_UTF8 = b"caf\xe9-\xff.txt"  # Latin-1 bytes: not valid UTF-8
MTIME = 1_600_000_000


def make_tree(top: Path) -> None:
    """A small tree with everything the plugin must keep."""
    (top / "data" / "deep" / "er").mkdir(parents=True)
    (top / "data" / "a.txt").write_text("alpha\n")
    (top / "data" / "deep" / "er" / "b.bin").write_bytes(os.urandom(70_000))
    (top / "data" / "group-writable").write_text("shared\n")
    (top / "data" / "group-writable").chmod(0o664)
    (top / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (top / "run.sh").chmod(0o755)
    (top / "secret").write_text("s3cret\n")
    (top / "secret").chmod(0o600)
    (top / "empty").mkdir(mode=0o750)
    (top / "empty").chmod(0o750)
    (top / "readonly").mkdir()
    (top / "readonly" / "inside.txt").write_text("ro\n")
    os.link(top / "data" / "a.txt", top / "data" / "hardlink.txt")
    os.symlink("data/a.txt", top / "current")
    os.symlink("does-not-exist", top / "dangling")
    fd = os.open(os.path.join(os.fsencode(top), NON_UTF8), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"bytes name\n")
    os.close(fd)
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
    (top / "readonly").chmod(0o555)
    os.utime(top / "readonly", (MTIME, MTIME))
    os.utime(top, (MTIME + 5, MTIME + 5))


def snapshot(top: Path) -> dict[bytes, tuple]:
    """Everything we promise to keep, keyed by the relative path as bytes."""
    found = {}
    base = os.fsencode(top)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            rel = os.path.relpath(path, base)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                with open(path, "rb") as fh:
                    found[rel] = ("file", stat.S_IMODE(st.st_mode), int(st.st_mtime), fh.read())
    return found


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    top = tmp_path / "src" / "app"
    top.mkdir(parents=True)
    make_tree(top)
    yield top
    (top / "readonly").chmod(0o755)  # let pytest clean up


def inside(target: Path, original: Path) -> Path:
    """Where a restore into `target` puts `original`: paths are stored relative to /."""
    return target / str(original).lstrip("/")


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_backup_then_restore_reproduces_the_tree(tree: Path, storage_root: Path, tmp_path: Path, compression):
    report = succeeded(execute(backup_job("files", {"paths": [str(tree)]}, storage_root, compression)))
    target = tmp_path / "restore-here"

    succeeded(
        execute(restore_job("files", {"paths": [str(tree)]}, storage_root, backup_ref(report), str(target)))
    )

    restored = inside(target, tree)
    assert snapshot(restored) == snapshot(tree)
    assert os.stat(restored / "data" / "a.txt").st_ino == os.stat(restored / "data" / "hardlink.txt").st_ino
    facts = report["manifest"]["facts"]
    assert facts["members"] == len(snapshot(tree))
    assert facts["total_size"] == sum(
        os.lstat(p).st_size
        for p in tree.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != "hardlink.txt"
    )
    (restored / "readonly").chmod(0o755)


def test_stored_tar_extracts_with_plain_tar(tree: Path, storage_root: Path, tmp_path: Path):
    report = succeeded(execute(backup_job("files", {"paths": [str(tree)]}, storage_root)))
    out = tmp_path / "by-gnu-tar"
    out.mkdir()

    subprocess.run(
        ["tar", "-xpf", str(storage_root / report["location"] / "data.tar"), "-C", str(out)], check=True
    )

    assert snapshot(inside(out, tree)) == snapshot(tree)
    assert report["location"].startswith("orders/app01-data/job-")
    (inside(out, tree) / "readonly").chmod(0o755)


def test_exclude_patterns_match_names_and_absolute_paths(tree: Path, storage_root: Path, tmp_path: Path):
    options = {"paths": [str(tree)], "exclude": ["*.bin", f"{tree}/data/group-*"]}
    report = succeeded(execute(backup_job("files", options, storage_root)))

    with tarfile.open(storage_root / report["location"] / "data.tar") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".bin") or "group-writable" in n]
    assert any(n.endswith("data/a.txt") for n in names)


def test_restore_into_non_empty_directory_needs_overwrite(tree: Path, storage_root: Path, tmp_path: Path):
    report = succeeded(execute(backup_job("files", {"paths": [str(tree)]}, storage_root)))
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    restored_file = inside(target, tree) / "data" / "a.txt"

    refused = execute(
        restore_job("files", {"paths": [str(tree)]}, storage_root, backup_ref(report), str(target))
    )

    assert refused["status"] == "failed" and "target not empty" in refused["error"]
    assert not restored_file.exists()
    assert sorted(os.listdir(target)) == ["keep.txt"]

    succeeded(
        execute(
            restore_job(
                "files", {"paths": [str(tree)]}, storage_root, backup_ref(report), str(target), overwrite=True
            )
        )
    )
    assert restored_file.read_text() == "alpha\n"
    assert (target / "keep.txt").read_text() == "mine\n"
    (inside(target, tree) / "readonly").chmod(0o755)


def test_in_place_restore_keeps_the_mode_of_parents_the_archive_only_implies(
    tree: Path, storage_root: Path, tmp_path: Path
):
    # Restoring a tree in place to "/" must not chmod the folders above it (think /tmp, 1777).
    sticky = tree.parent
    sticky.chmod(0o1777)
    above = [sticky, *sticky.parents]
    modes_before = [stat.S_IMODE(p.stat().st_mode) for p in above]
    report = succeeded(execute(backup_job("files", {"paths": [str(tree)]}, storage_root)))
    (tree / "data" / "a.txt").write_text("damaged\n")

    options = {"paths": [str(tree)]}
    in_place = restore_job("files", options, storage_root, backup_ref(report), "/", overwrite=True)
    succeeded(execute(in_place))

    assert (tree / "data" / "a.txt").read_text() == "alpha\n"
    assert [stat.S_IMODE(p.stat().st_mode) for p in above] == modes_before


def test_overwrite_replaces_a_symlink_in_the_way_instead_of_following_it(
    tree: Path, storage_root: Path, tmp_path: Path
):
    report = succeeded(execute(backup_job("files", {"paths": [str(tree / "data")]}, storage_root)))
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    outside.mkdir()
    restored_data = inside(target, tree / "data")
    restored_data.parent.mkdir(parents=True)
    os.symlink(outside, restored_data)  # a trap: data -> somewhere else

    options = {"paths": [str(tree / "data")]}
    succeeded(
        execute(restore_job("files", options, storage_root, backup_ref(report), str(target), overwrite=True))
    )

    assert os.listdir(outside) == []
    assert not restored_data.is_symlink() and (restored_data / "a.txt").read_text() == "alpha\n"


def test_restore_target_must_be_absolute(ctx: JobContext):
    with pytest.raises(InvalidOptions):
        files.restore({"paths": ["/x"]}, io.BytesIO(b""), "relative/dir", False, ctx)


def test_options_are_validated():
    for bad in (
        {},
        {"paths": []},
        {"paths": ["relative"]},
        {"paths": ["/a"], "exclude": "*.tmp"},
        {"paths": ["/a"], "extra": 1},
    ):
        with pytest.raises(InvalidOptions):
            files.validate(bad)
    assert files.validate({"paths": ["/srv/app/", "/srv/app/data", "/srv/other"]})["paths"] == [
        "/srv/app",
        "/srv/other",
    ]


def test_restore_test_restores_to_scratch_and_compares_counts(tree: Path, storage_root: Path, tmp_path: Path):
    report = succeeded(execute(backup_job("files", {"paths": [str(tree)]}, storage_root, "gzip")))
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    result = succeeded(
        execute(
            other_job("restore_test", "files", {"paths": [str(tree)]}, storage_root, backup_ref(report)),
            scratch_dir=str(scratch),
        )
    )

    assert result["manifest"]["compared"] is True
    assert result["manifest"]["facts"]["members"] == report["manifest"]["facts"]["members"]
    assert os.listdir(scratch) == []  # cleaned up


# --- hostile archives -------------------------------------------------------------


@pytest.fixture(params=["with-stdlib-filter", "own-checks-only"])
def extraction_checks(request, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run hostile-archive tests twice: as on Python >= 3.11.4, and as on 3.11.0-3.11.3 (Debian 12),
    whose tarfile has no extraction filters and leaves every check to the plugin."""
    if request.param == "own-checks-only":
        monkeypatch.setattr(files, "_STDLIB_DATA_FILTER", None)
        monkeypatch.setattr(files, "_EXTRACT_KWARGS", {})


def store_crafted_tar(storage_root: Path, build) -> dict:
    """Put a hand-made tar on storage with a correct checksum, as an attacker with write access could."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    data = buf.getvalue()
    folder = storage_root / "orders" / "app01-data" / "job-1"
    folder.mkdir(parents=True)
    (folder / "data.tar").write_bytes(data)
    return {
        "location": "orders/app01-data/job-1",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "stored_size": len(data),
        "compression": "none",
    }


def add_file(tar: tarfile.TarFile, name: str, content: bytes = b"pwned\n") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def add_device(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


@pytest.mark.parametrize(
    "evil",
    [
        pytest.param(lambda tar, out: add_file(tar, f"../{out.name}/evil.txt"), id="dot-dot"),
        pytest.param(lambda tar, out: add_file(tar, f"{out}/evil.txt"), id="absolute"),
        pytest.param(lambda tar, out: add_device(tar, "null"), id="device"),
        pytest.param(lambda tar, out: tar.addfile(_hardlink("h", f"{out}/victim")), id="hardlink-out"),
    ],
)
def test_hostile_archive_is_refused_and_writes_nothing(
    storage_root: Path, tmp_path: Path, evil, extraction_checks
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("original\n")
    target = tmp_path / "target"

    def build(tar: tarfile.TarFile) -> None:
        add_file(tar, "srv/ok.txt", b"fine\n")  # a harmless member first: must not stay behind either
        evil(tar, outside)

    backup = store_crafted_tar(storage_root, build)
    report = execute(restore_job("files", {"paths": ["/srv"]}, storage_root, backup, str(target)))

    assert report["status"] == "failed"
    assert "unsafe archive member refused" in report["error"]
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "original\n"
    assert not target.exists()  # created for the restore, removed again with everything in it


def _hardlink(name: str, to: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = to
    return info


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
def test_symlink_pointing_outside_is_skipped_and_not_followed(
    storage_root: Path, tmp_path: Path, extraction_checks, relative: bool
):
    outside = tmp_path / "outside"
    outside.mkdir()
    link_target = "../" * 12 + str(outside).lstrip("/") if relative else str(outside)

    def build(tar: tarfile.TarFile) -> None:
        link = tarfile.TarInfo("srv/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = link_target
        tar.addfile(link)
        add_file(tar, "srv/escape/evil.txt")  # would land outside if the link were created and followed

    backup = store_crafted_tar(storage_root, build)
    target = tmp_path / "target"
    report = succeeded(execute(restore_job("files", {"paths": ["/srv"]}, storage_root, backup, str(target))))

    assert os.listdir(outside) == []
    assert not (target / "srv" / "escape").is_symlink()
    assert report["manifest"]["facts"]["skipped_links"] == [f"srv/escape -> {link_target}"]
    assert "skipped symlink pointing outside the target" in report["log_tail"]
