"""A backup's and a restore's memory do not grow with the number of entries.

Python's tarfile keeps every header it writes or reads (about 800 bytes each): a
million-file backup held 780 MiB, and restoring one file out of a million-entry
point held a million headers.
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc

from backup_agent.context import JobContext
from backup_agent.file_index import IndexWriter
from backup_agent.plugins import files


def archive_of(entries: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo("srv/app")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for i in range(entries):
            info = tarfile.TarInfo(f"srv/app/file-{i:06d}.txt")
            tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def restore_peak(tmp_path, entries: int, name: str) -> int:
    stream = io.BytesIO(archive_of(entries))
    ctx = JobContext(job_id=1, client="memory", selection=(b"srv/app/file-000003.txt",))
    tracemalloc.start()
    try:
        facts = files.restore({"paths": ["/srv/app"]}, stream, str(tmp_path / name), False, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert facts["members"] == 1
    assert [p.name for p in (tmp_path / name / "srv" / "app").iterdir()] == ["file-000003.txt"]
    return peak


def test_restoring_one_file_holds_the_same_memory_from_4000_or_40000_entries(tmp_path):
    small = restore_peak(tmp_path, 4_000, "small")
    large = restore_peak(tmp_path, 40_000, "large")

    # Before, the headers alone grew the peak about tenfold (some 40 MB for 40,000).
    assert large < small * 1.5 + 1_000_000, (small, large)


class Discard:
    """A sink that keeps nothing: only the plugin's own memory is measured."""

    def write(self, data: bytes) -> int:
        return len(data)


def backup_peak(tmp_path, count: int) -> int:
    tree = tmp_path / f"tree-{count}"
    for i in range(count):
        folder = tree / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}").touch()
    ctx = JobContext(job_id=1, client="memory", index=IndexWriter(io.BytesIO(), "files"))
    tracemalloc.start()
    try:
        facts = files.backup({"paths": [str(tree)]}, Discard(), ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert facts["members"] == count + 21
    return peak


def test_backing_up_20000_files_holds_no_more_memory_than_2000(tmp_path):
    small = backup_peak(tmp_path, 2_000)
    large = backup_peak(tmp_path, 20_000)

    # Before, the headers alone added some 16 MB for 20,000 files. (The index buffers one
    # block and writes it to a BytesIO here, which does grow: 13 bytes an entry at most.)
    assert large < small * 1.5 + 1_000_000, (small, large)
