"""Restoring single files and folders of a files backup (a restore job's `target.paths`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backup_agent.file_index import path_text

from .helpers import backup_job, backup_ref, execute, restore_job, succeeded, tool


def make_tree(top: Path) -> None:
    (top / "data" / "deep").mkdir(parents=True)
    (top / "data").chmod(0o750)
    (top / "data" / "a.txt").write_text("alpha\n")
    (top / "data" / "b.txt").write_text("beta\n")
    (top / "data" / "deep" / "c.bin").write_bytes(os.urandom(5000))
    (top / "docs" / "sub").mkdir(parents=True)
    (top / "docs" / "readme").write_text("read me\n")
    (top / "docs" / "sub" / "x").write_text("x\n")
    (top / "docs" / "sub" / "empty").mkdir()
    os.symlink("readme", top / "docs" / "link")
    (top / "other.txt").write_text("other\n")
    with open(os.path.join(os.fsencode(top), b"caf\xe9"), "wb") as fh:
        fh.write(b"latin-1\n")
    os.link(top / "data" / "a.txt", top / "docs" / "hard-a")


def walk(top: Path) -> set[str]:
    """Every path under ``top``, relative, folders included."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), top))
    return found


def ancestors(path: Path) -> set[str]:
    parts = str(path).strip("/").split("/")
    return {"/".join(parts[: i + 1]) for i in range(len(parts) - 1)}


@pytest.fixture
def backed_up(tmp_path: Path, storage_root: Path) -> tuple[Path, dict]:
    top = tmp_path / "src" / "app"
    top.mkdir(parents=True)
    make_tree(top)
    report = succeeded(execute(backup_job("files", {"paths": [str(top)]}, storage_root)))
    return top, report


def restore(top: Path, storage_root: Path, report: dict, target: Path, paths: list[str], **kw) -> dict:
    job = restore_job("files", {"paths": [str(top)]}, storage_root, backup_ref(report), str(target), **kw)
    job["target"]["paths"] = paths
    return execute(job)


def test_two_files_and_a_folder_restore_and_nothing_else(backed_up, storage_root: Path, tmp_path: Path):
    top, report = backed_up
    target = tmp_path / "restored"
    paths = [str(top / "data" / "a.txt"), str(top / "other.txt"), str(top / "docs")]

    result = succeeded(restore(top, storage_root, report, target, paths))

    base = target / str(top).lstrip("/")
    rel = str(top).lstrip("/")
    docs = {f"{rel}/docs/{p}" for p in ("readme", "sub", "sub/x", "sub/empty", "link", "hard-a")}
    expected = ancestors(top / "x") | {f"{rel}/data", f"{rel}/data/a.txt", f"{rel}/other.txt", f"{rel}/docs"}
    assert walk(target) == expected | docs
    for name in ("data/a.txt", "other.txt", "docs/readme", "docs/sub/x", "docs/hard-a"):
        assert (base / name).read_bytes() == (top / name).read_bytes(), name
    assert os.readlink(base / "docs" / "link") == "readme"
    assert os.stat(base / "docs" / "hard-a").st_ino == os.stat(base / "data" / "a.txt").st_ino
    # The folder above a selected file has its archived mode.
    assert stat.S_IMODE(os.stat(base / "data").st_mode) == 0o750
    facts = result["manifest"]["facts"]
    assert facts["selected"] == 3
    assert facts["members"] == 3 + 6  # a.txt, other.txt, docs and its six entries
    assert facts["total_size"] == len("alpha\n") + len("other\n") + len("read me\n") + len("x\n")


def test_a_name_that_is_not_utf8_is_selected_by_its_escaped_text(backed_up, storage_root, tmp_path):
    top, report = backed_up
    target = tmp_path / "restored"

    succeeded(restore(top, storage_root, report, target, [str(top) + "/" + path_text(b"caf\xe9")]))

    base = os.fsencode(target / str(top).lstrip("/"))
    assert os.listdir(base) == [b"caf\xe9"]
    with open(os.path.join(base, b"caf\xe9"), "rb") as fh:
        assert fh.read() == b"latin-1\n"


def test_a_path_not_in_the_backup_fails_and_leaves_the_target_untouched(backed_up, storage_root, tmp_path):
    top, report = backed_up
    target = tmp_path / "restored"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    paths = [str(top / "other.txt"), str(top / "no-such-file"), str(top / "neither")]

    result = restore(top, storage_root, report, target, paths, overwrite=True)

    assert result["status"] == "failed" and result["error_class"] == "invalid_job"
    assert f"{top}/no-such-file is not in this backup" in result["error"]
    assert walk(target) == {"keep.txt"} and (target / "keep.txt").read_text() == "mine\n"
    fresh = tmp_path / "fresh"
    assert restore(top, storage_root, report, fresh, paths)["status"] == "failed"
    assert not fresh.exists()


@pytest.mark.parametrize(
    "path", ["/srv/../etc/passwd", "/srv/./x", "relative/path", "/srv/x\\", "/srv/\\000"]
)
def test_bad_paths_are_refused_before_anything_is_read(backed_up, storage_root, tmp_path, path):
    top, report = backed_up
    target = tmp_path / "restored"

    result = restore(top, storage_root, report, target, [str(top / "other.txt"), path])

    assert result["status"] == "failed" and result["error_class"] == "invalid_job", result["error"]
    assert not target.exists()


def test_overwrite_rules_are_unchanged(backed_up, storage_root: Path, tmp_path: Path):
    top, report = backed_up
    target = tmp_path / "restored"
    base = target / str(top).lstrip("/")
    (base / "data").mkdir(parents=True)
    (base / "data" / "a.txt").write_text("changed since\n")
    (base / "data" / "b.txt").write_text("not selected\n")
    paths = [str(top / "data" / "a.txt")]

    refused = restore(top, storage_root, report, target, paths)
    assert refused["status"] == "failed" and refused["error_class"] == "invalid_job"
    assert (base / "data" / "a.txt").read_text() == "changed since\n"

    succeeded(restore(top, storage_root, report, target, paths, overwrite=True))
    assert (base / "data" / "a.txt").read_text() == "alpha\n"
    assert (base / "data" / "b.txt").read_text() == "not selected\n"


def test_a_hard_link_without_its_target_fails_clearly(backed_up, storage_root: Path, tmp_path: Path):
    top, report = backed_up
    target = tmp_path / "restored"
    hard = top / "docs" / "hard-a"

    result = restore(top, storage_root, report, target, [str(hard)])

    assert result["status"] == "failed" and result["error_class"] == "invalid_job"
    assert f"{hard} is a hard link to {top}/data/a.txt, which is not selected" in result["error"]
    assert not target.exists()
    succeeded(restore(top, storage_root, report, target, [str(hard), str(top / "data" / "a.txt")]))
    assert (target / str(hard).lstrip("/")).read_text() == "alpha\n"


def test_selecting_root_restores_everything(backed_up, storage_root: Path, tmp_path: Path):
    top, report = backed_up
    target = tmp_path / "restored"

    result = succeeded(restore(top, storage_root, report, target, ["/"]))

    assert "selected" not in result["manifest"]["facts"]
    assert result["manifest"]["facts"]["members"] == report["manifest"]["facts"]["members"]


def test_a_plugin_without_an_index_refuses_a_selection(storage_root: Path, tmp_path: Path):
    options = {"backup_argv": [tool("echo"), "hi"], "restore_argv": [tool("cat")]}
    report = succeeded(execute(backup_job("command", options, storage_root)))
    job = restore_job("command", options, storage_root, backup_ref(report), str(tmp_path / "t"))
    job["target"]["paths"] = ["/x"]

    result = execute(job)

    assert result["status"] == "failed" and result["error_class"] == "invalid_job"
    assert "cannot restore single paths" in result["error"]
