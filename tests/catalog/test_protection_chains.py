"""RPO counts only points that can be restored: an incremental on a damaged full protects nothing."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from catalog.choices import Verification
from catalog.models import Backup, BackupClient
from catalog.protection import with_rpo
from tests import factories


def rpo_of(client) -> tuple:
    row = with_rpo(BackupClient.objects.filter(pk=client.pk), timezone.now()).get()
    return row.last_good_at, row.rpo_met


def test_a_whole_chain_meets_the_rpo_with_its_newest_point(db):
    client = factories.incremental_client()
    full, first, second = factories.build_chain(client, 3, every=timedelta(hours=6))
    assert rpo_of(client) == (second.taken_at, True)


def test_a_damaged_full_leaves_its_incrementals_protecting_nothing(db):
    client = factories.incremental_client()
    full, first, second = factories.build_chain(client, 3, every=timedelta(hours=6))
    Backup.objects.filter(pk=full.pk).update(verification=Verification.FAILED)
    assert rpo_of(client) == (None, False)


def test_a_damaged_incremental_falls_back_to_the_point_before_it(db):
    client = factories.incremental_client()
    full, first, second = factories.build_chain(client, 3, every=timedelta(hours=6))
    Backup.objects.filter(pk=second.pk).update(verification=Verification.FAILED)
    assert rpo_of(client)[0] == first.taken_at
