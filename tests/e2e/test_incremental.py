"""Incremental backups end to end: the real agent, a real worker, real files (issue #15).

A full and three incrementals with edits, deletions and renames between them, each
point restored and compared with the tree as it was when it was taken; a damaged chain
member fails the restore of the later points before the target is touched; retention,
the admin and the ORM cannot remove a base that a retained incremental needs.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, ErrorClass, JobKind, JobState, Verification
from catalog.models import Backup, BackupClient, Job
from catalog.services import jobs, retention
from core.queue import enqueue
from tests import factories
from tests.e2e import scenario
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

BIG = 2_000_000  # an unchanged file an incremental must not store again


def with_levels(setup: scenario.Scenario, **levels) -> BackupClient:
    policy = setup.client.policy
    for field, value in (levels or {"full_every_backups": 7}).items():
        setattr(policy, field, value)
    policy.save()
    return BackupClient.objects.get(pk=setup.client.pk)


def take_backup(agent_cli, client: BackupClient) -> Backup:
    job = jobs.queue_backup(client)
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error_message, job.log_tail)
    return Backup.objects.get(job=job)


def restore(agent_cli, backup: Backup, target, *, overwrite: bool = False) -> Job:
    job = jobs.queue_restore(backup, agent=backup.job.agent, target_location=str(target), overwrite=overwrite)
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]
    job.refresh_from_db()
    return job


def enrolled(agent_cli, tmp_path, **levels) -> tuple[scenario.Scenario, BackupClient]:
    setup = scenario.build(tmp_path)
    (setup.source / "big.bin").write_bytes(os.urandom(BIG))
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    return setup, with_levels(setup, **levels)


@pytest.mark.parametrize("worker", ["django_q"], indirect=True)
def test_full_and_three_incrementals_each_restore_exactly_the_tree_of_its_moment(worker, agent_cli, tmp_path):
    setup, client = enrolled(agent_cli, tmp_path)
    source = setup.source
    points: list[tuple[Backup, dict]] = []

    def scheduled_backup() -> Backup:
        # The schedule says "due now"; the worker's scheduler queues it, the agent runs it.
        BackupClient.objects.filter(pk=client.pk).update(next_backup_at=timezone.now() - timedelta(minutes=1))
        enqueue("catalog.tasks.schedule_backups")
        job = wait_for(
            lambda: Job.objects.filter(client=client, kind=JobKind.BACKUP, state=JobState.QUEUED).first(),
            timeout=45,
            what="the worker to queue the scheduled backup",
        )
        result = agent_cli.run_once()
        assert result.returncode == 0, result.stderr[-3000:]
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, (job.error_message, job.log_tail)
        backup = Backup.objects.get(job=job)
        points.append((backup, scenario.tree(source)))
        return backup

    full = scheduled_backup()
    # Day 1: an edit, a new file, a deletion, a rename.
    (source / "docs" / "readme.txt").write_text("hello, edited\n")
    (source / "docs" / "new.txt").write_text("new on day 1\n")
    (source / "script.sh").unlink()
    (source / "data.bin").rename(source / "data-renamed.bin")
    first = scheduled_backup()
    # Day 2: a folder renamed, a file replaced by a folder, a symlink retargeted, a mode change.
    (source / "docs").rename(source / "documents")
    (source / "data-renamed.bin").unlink()
    (source / "data-renamed.bin").mkdir()
    (source / "data-renamed.bin" / "inside.txt").write_text("a folder now\n")
    (source / "link").unlink()
    (source / "link").symlink_to("documents/new.txt")
    (source / os.fsdecode(b"caf\xe9-latin1.txt")).chmod(0o600)
    second = scheduled_backup()
    # Day 3: the new file deleted again, an old name comes back with other content.
    (source / "documents" / "new.txt").unlink()
    (source / "script.sh").write_text("#!/bin/sh\necho back\n")
    third = scheduled_backup()

    assert full.level == BackupLevel.FULL and full.base is None
    for point, base in ((first, full), (second, first), (third, second)):
        assert (point.level, point.base_id, point.full_id) == (BackupLevel.INCREMENTAL, base.pk, full.pk)
        # Only what changed is stored: the big unchanged file is in the full alone.
        assert point.size_bytes < BIG // 4 < full.size_bytes, (point.size_bytes, full.size_bytes)

    for number, (backup, expected) in enumerate(points):
        target = tmp_path / "restored" / f"point-{number}"
        job = restore(agent_cli, backup, target)
        assert job.state == JobState.SUCCEEDED, (job.error_message, job.log_tail)
        restored = scenario.tree(target / str(source).lstrip("/"))
        assert restored == expected, f"point {number} ({backup.level})"


def test_a_damaged_chain_member_fails_later_restores_with_checksum_mismatch_and_the_target_untouched(
    agent_cli, tmp_path
):
    setup, client = enrolled(agent_cli, tmp_path)
    full = take_backup(agent_cli, client)
    (setup.source / "docs" / "readme.txt").write_text("changed\n")
    first = take_backup(agent_cli, client)
    (setup.source / "docs" / "more.txt").write_text("more\n")
    second = take_backup(agent_cli, client)
    assert second.level == BackupLevel.INCREMENTAL and second.full_id == full.pk
    scenario.flip_middle_byte(scenario.stored_data_file(setup.storage, full))

    target = tmp_path / "restore-target"
    target.mkdir()
    (target / "keep.txt").write_text("existing data\n")
    before = scenario.tree(target)
    job = restore(agent_cli, second, target, overwrite=True)

    assert job.state == JobState.FAILED
    assert job.error_class == ErrorClass.CHECKSUM_MISMATCH, job.error_message
    assert scenario.tree(target) == before
    # The agent named the damaged member: it failed verification, and with it every later point.
    full.refresh_from_db()
    assert full.verification == Verification.FAILED
    restorable = set(Backup.objects.restorable().filter(client=client).values_list("pk", flat=True))
    assert restorable.isdisjoint({full.pk, first.pk, second.pk})

    # The chain is not trusted any more: the next backup is a full, and its log says why.
    fresh = take_backup(agent_cli, client)
    assert fresh.level == BackupLevel.FULL and fresh.base is None
    assert "full" in fresh.job.log_tail.lower(), fresh.job.log_tail


def test_retention_admin_and_orm_cannot_remove_a_base_a_retained_incremental_needs(
    agent_cli, tmp_path, client
):
    setup, backup_client = enrolled(agent_cli, tmp_path)
    full = take_backup(agent_cli, backup_client)
    (setup.source / "docs" / "readme.txt").write_text("changed\n")
    incremental = take_backup(agent_cli, backup_client)
    assert incremental.base_id == full.pk
    past = timezone.now() - timedelta(days=1)
    Backup.objects.filter(pk=full.pk).update(expires_at=past, taken_at=past - timedelta(days=30))

    # Retention: the base is past its expiry but waits for its dependent.
    assert retention.expire_due() == 0
    full.refresh_from_db()
    assert full.status == BackupStatus.AVAILABLE
    assert not Job.objects.filter(kind=JobKind.EXPIRE).exists()

    # The admin has no way to delete it.
    admin = factories.UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)
    response = client.post(f"/admin/catalog/backup/{full.pk}/delete/", {"post": "yes"})
    assert response.status_code in (302, 403)
    assert Backup.objects.filter(pk=full.pk, status=BackupStatus.AVAILABLE).exists()

    # Nor the ORM: deleting the row is refused by the foreign key, expiring it by the database.
    with pytest.raises(ProtectedError), transaction.atomic():
        Backup.objects.filter(pk=full.pk).delete()
    with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
        Backup.objects.filter(pk=full.pk).update(status=BackupStatus.EXPIRED)
    full.refresh_from_db()
    assert full.status == BackupStatus.AVAILABLE
    assert (setup.storage / full.location).is_dir()

    # Once the dependent expires too, the whole chain goes in one sweep and the agent removes both.
    Backup.objects.filter(pk=incremental.pk).update(expires_at=past, taken_at=past - timedelta(days=29))
    assert retention.expire_due() == 2
    for _ in range(2):
        assert agent_cli.run_once().returncode == 0
    assert set(Backup.objects.filter(pk__in=[full.pk, incremental.pk]).values_list("status", flat=True)) == {
        BackupStatus.DELETED
    }
    assert not (setup.storage / full.location).exists()
    assert not (setup.storage / incremental.location).exists()
