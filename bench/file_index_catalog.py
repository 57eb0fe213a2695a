"""The scratch catalog of bench/file_index.py: one owner, one point of 1,000,000 entries, 30 of 100,000."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from catalog.services.file_lists import index_file
from tests import factories


def _point(client, when, folders, rng, write_index):
    backup = factories.BackupFactory(client=client, taken_at=when)
    path = index_file(backup.job_id)
    entries = write_index(path, folders, rng)
    backup.index_entries = entries
    backup.index_kind = "files"
    backup.index_size_bytes = path.stat().st_size
    backup.save(update_fields=["index_entries", "index_kind", "index_size_bytes"])
    return backup


def make_points(work, rng, write_index):
    owner = factories.UserFactory(username="bench-owner")
    application = factories.ApplicationFactory(owners=[owner])
    now = timezone.now()
    one = factories.BackupClientFactory(application=application, name="one-million")
    # 1,000 folders of 900 files and one of 100,000: 1,000,002 entries with the top and /srv/data.
    big = _point(
        one, now, [(f"folder-{i:04d}".encode(), 900) for i in range(1000)] + [(b"big-folder", 100_000)],
        rng, write_index,
    )
    thirty = factories.BackupClientFactory(application=application, name="thirty-points")
    folders = [(f"folder-{i:03d}".encode(), 1000) for i in range(100)]  # 100,101 entries each
    points = [_point(thirty, now - timedelta(days=day), folders, rng, write_index) for day in range(30)]
    return owner, big, thirty, points
