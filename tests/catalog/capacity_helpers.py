"""A storage target filling steadily, shared by the capacity admin and alert tests."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from catalog.models import StorageTarget
from tests import factories

GB, TB = 10**9, 10**12


def filling_target(*, name: str = "backup-nfs-1", capacity_bytes: int = int(5.05 * TB)) -> StorageTarget:
    """100 GB a day kept a year, for the last 20 days (and today): 2.1 TB held, + 100 GB a day
    (5.05 TB, the default capacity: full in 30 days)."""
    storage = factories.StorageTargetFactory(name=name, capacity_bytes=capacity_bytes)
    client = factories.BackupClientFactory(policy=factories.ProtectionPolicyFactory(storage_target=storage))
    today = timezone.localdate()
    midnight = timezone.make_aware(timezone.datetime.combine(today, timezone.datetime.min.time()))
    for day in range(-20, 1):
        moment = midnight + timedelta(days=day, minutes=1)
        factories.BackupFactory(
            client=client, taken_at=moment, expires_at=moment + timedelta(days=365),
            stored_size_bytes=100 * GB, size_bytes=100 * GB,
        )  # fmt: skip
    return storage
