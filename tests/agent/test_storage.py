"""Filesystem storage: layout, atomic completion, checksums, confinement to the root."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from backup_agent.errors import ChecksumMismatch, InvalidOptions, StorageError
from backup_agent.storage import FilesystemStorage

from .helpers import backup_job, backup_ref, execute, other_job, restore_job, succeeded, tool


def write_backup(storage: FilesystemStorage, location: str, payload: bytes) -> None:
    with storage.open_writer(location, "data.bin") as writer:
        writer.write(payload)
        stored = writer.finish()
        writer.commit({"sha256": stored.sha256})


def test_writer_stores_data_and_manifest_under_final_name_only_after_commit(storage_root: Path):
    storage = FilesystemStorage(str(storage_root))
    final = storage_root / "orders" / "c1" / "job-7"
    with storage.open_writer("orders/c1/job-7", "data.bin") as writer:
        writer.write(b"x" * 3_000_000)
        assert not final.exists()
        assert (storage_root / "orders" / "c1" / ".partial-job-7" / "data.bin").exists()
        stored = writer.finish()
        writer.commit({"job_id": 7})

    assert sorted(os.listdir(final)) == ["data.bin", "manifest.json"]
    assert not (storage_root / "orders" / "c1" / ".partial-job-7").exists()
    assert stored.sha256 == hashlib.sha256((final / "data.bin").read_bytes()).hexdigest()
    assert (stored.size, stored.stored_size) == (3_000_000, 3_000_000)
    assert json.loads((final / "manifest.json").read_text()) == {"job_id": 7}


def test_gzip_checksum_is_of_the_stored_bytes(storage_root: Path):
    storage = FilesystemStorage(str(storage_root), "gzip")
    payload = b"compressible " * 100_000
    with storage.open_writer("orders/c1/job-8", "data.bin") as writer:
        writer.write(payload)
        stored = writer.finish()
        writer.commit({})

    data_file = storage_root / "orders" / "c1" / "job-8" / "data.bin.gz"
    assert gzip.decompress(data_file.read_bytes()) == payload
    assert stored.sha256 == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert stored.stored_size == data_file.stat().st_size < stored.size == len(payload)


def test_failure_inside_the_writer_leaves_no_folder(storage_root: Path):
    storage = FilesystemStorage(str(storage_root))
    with pytest.raises(RuntimeError), storage.open_writer("orders/c1/job-9", "data.bin") as writer:
        writer.write(b"half")
        raise RuntimeError("tool died")
    assert os.listdir(storage_root / "orders" / "c1") == []


@pytest.mark.parametrize(
    "location",
    [
        "../escape/c/job-1",
        "/etc/c/job-1",
        "orders/../../job-1",
        "orders/.partial-job-1",
        "orders/c1",
        "orders//job-1",
        "orders/c1/job-1/..",
        "",
        "orders\\c1\\job-1",
    ],
)
def test_locations_that_could_leave_the_root_or_are_not_job_folders_are_refused(storage_root: Path, location):
    with pytest.raises(InvalidOptions):
        FilesystemStorage(str(storage_root)).job_dir(location)


def test_symlinked_folder_inside_root_cannot_redirect_writes(storage_root: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, storage_root / "orders")
    with pytest.raises(InvalidOptions, match="escapes the storage root"):
        FilesystemStorage(str(storage_root)).open_writer("orders/c1/job-1", "data.bin")
    assert os.listdir(elsewhere) == []


def test_backup_job_with_traversing_destination_fails_and_writes_nothing(storage_root: Path, tmp_path: Path):
    job = backup_job("command", {"backup_argv": [tool("echo"), "hi"]}, storage_root)
    job["destination"] = "../outside/c/job-1"
    report = execute(job)
    assert report["status"] == "failed" and "invalid options" in report["error"]
    assert report["error_class"] == "invalid_job"
    assert not (tmp_path / "outside").exists()


def test_partial_folder_is_not_a_backup(storage_root: Path):
    storage = FilesystemStorage(str(storage_root))
    partial = storage_root / "orders" / "c1" / ".partial-job-3"
    partial.mkdir(parents=True)
    (partial / "data.bin").write_bytes(b"incomplete")
    with pytest.raises(StorageError, match="not found"):
        storage.verify("orders/c1/job-3", hashlib.sha256(b"incomplete").hexdigest())


def test_corrupted_backup_fails_with_checksum_mismatch_and_target_is_untouched(
    storage_root: Path, tmp_path: Path
):
    source = tmp_path / "src"
    source.mkdir()
    (source / "file.txt").write_text("version 1\n")
    report = succeeded(execute(backup_job("files", {"paths": [str(source)]}, storage_root)))
    data_file = storage_root / report["location"] / "data.tar"
    raw = bytearray(data_file.read_bytes())
    raw[700] ^= 0xFF  # one flipped bit in the file's content block
    data_file.write_bytes(bytes(raw))
    target = tmp_path / "target"
    target.mkdir()
    (target / "sentinel").write_text("untouched\n")

    result = execute(
        restore_job(
            "files", {"paths": [str(source)]}, storage_root, backup_ref(report), str(target), overwrite=True
        )
    )

    assert result["status"] == "failed" and result["error_class"] == "checksum_mismatch"
    assert "checksum mismatch" in result["error"]
    assert os.listdir(target) == ["sentinel"] and (target / "sentinel").read_text() == "untouched\n"


def test_verify_raises_before_reading_into_any_consumer(storage_root: Path):
    storage = FilesystemStorage(str(storage_root))
    write_backup(storage, "orders/c1/job-4", b"payload")
    with pytest.raises(ChecksumMismatch):
        storage.verify("orders/c1/job-4", "0" * 64)


def test_expire_deletes_only_the_job_folder(storage_root: Path, tmp_path: Path):
    storage = FilesystemStorage(str(storage_root))
    write_backup(storage, "orders/c1/job-5", b"old")
    write_backup(storage, "orders/c1/job-6", b"new")
    ref = {"location": "orders/c1/job-5", "sha256": "", "compression": "none"}

    report = succeeded(execute(other_job("expire", "files", {"paths": ["/x"]}, storage_root, ref)))

    assert report["manifest"] == {"expired": "orders/c1/job-5", "existed": True}
    assert os.listdir(storage_root / "orders" / "c1") == ["job-6"]
    again = succeeded(execute(other_job("expire", "files", {"paths": ["/x"]}, storage_root, ref)))
    assert again["manifest"]["existed"] is False


@pytest.mark.parametrize("location", ["orders/c1", "../protection/orders/c1/job-6", "/tmp/job-6"])
def test_expire_refuses_anything_but_a_job_folder_inside_the_root(storage_root: Path, location):
    storage = FilesystemStorage(str(storage_root))
    write_backup(storage, "orders/c1/job-6", b"keep")
    ref = {"location": location, "sha256": "", "compression": "none"}

    report = execute(other_job("expire", "files", {"paths": ["/x"]}, storage_root, ref))

    assert report["status"] == "failed"
    assert (storage_root / "orders" / "c1" / "job-6" / "data.bin").read_bytes() == b"keep"


def test_unknown_storage_kind_is_refused(storage_root: Path):
    job = backup_job("command", {"backup_argv": [tool("echo"), "hi"]}, storage_root)
    job["storage"] = {"kind": "s3", "root": "bucket"}
    report = execute(job)
    assert report["status"] == "failed" and "storage kind 's3'" in report["error"]


def test_a_side_file_that_is_a_fifo_or_of_another_size_is_refused_without_reading_it(storage_root: Path):
    """A planted index (a FIFO, a huge file) must neither hang the job nor be hashed whole."""
    import hashlib

    from backup_agent.errors import ChecksumMismatch

    storage = FilesystemStorage(str(storage_root))
    folder = storage.job_dir("app/client/job-1")
    folder.mkdir(parents=True)
    os.mkfifo(folder / "index.bpi")  # open() of a FIFO without a writer would block for ever
    with pytest.raises(ChecksumMismatch, match="not a file of the recorded 10 bytes"):
        storage.open_side_file("app/client/job-1", "index.bpi", "0" * 64, 10)
    (folder / "index.bpi").unlink()
    (folder / "index.bpi").write_bytes(b"x" * 11)
    with pytest.raises(ChecksumMismatch, match="not a file of the recorded 10 bytes"):
        storage.open_side_file("app/client/job-1", "index.bpi", hashlib.sha256(b"x" * 11).hexdigest(), 10)
