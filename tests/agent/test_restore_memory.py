"""A restore's memory does not grow with the number of entries in the archive.

Python's tarfile keeps every header it reads in stream mode; restoring one file
out of a million-entry point must not hold a million headers.
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc

from backup_agent.context import JobContext
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
