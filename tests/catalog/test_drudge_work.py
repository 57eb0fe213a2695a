"""Restore testing, retention and the watches: the routine the portal does so people don't."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.choices import (
    AlertKind,
    BackupStatus,
    ClientStatus,
    JobKind,
    JobState,
    JobTrigger,
    Verification,
)
from catalog.errors import InvalidTransition
from catalog.models import Alert, Backup, BackupClient, Job, StorageTarget
from catalog.services import jobs, restore_tests, retention, watch
from tests import factories


@pytest.fixture
def now():
    """When the test runs, not when the module was imported: the services also read the clock
    (a job's finish, a lease), and a suite runs long enough for the two to drift apart."""
    return timezone.now()


@pytest.fixture
def days_ago(now):
    def days_ago(n: float):
        return now - timedelta(days=n)

    return days_ago


def backup_at(client, taken, **fields):
    return factories.BackupFactory(
        client=client, taken_at=taken, expires_at=taken + timedelta(days=30), **fields
    )


def run_job(job: Job, *, ok: bool = True, error: str = "restore test mismatch: 3 members, expected 4"):
    jobs.claim(job.agent)
    if ok:
        return jobs.complete_success(job.agent, job.pk, report=None)[0]
    return jobs.complete_failure(job.agent, job.pk, error=error)


@pytest.fixture
def client(db, days_ago):
    client = factories.BackupClientFactory(policy__restore_test_interval_days=7)
    BackupClient.objects.filter(pk=client.pk).update(created_at=days_ago(60))
    client.refresh_from_db()
    return client


# --- restore tests ----------------------------------------------------------------------------


def test_due_client_gets_a_restore_test_of_its_newest_backup_first(client, now, days_ago):
    backup_at(client, days_ago(3))
    newest = backup_at(client, days_ago(1))

    assert restore_tests.schedule(now=now) == 1

    job = Job.objects.get(kind=JobKind.RESTORE_TEST)
    assert (job.backup, job.agent, job.trigger) == (newest, client.agent, JobTrigger.SYSTEM)
    assert restore_tests.schedule(now=now) == 0  # one open test per client


def test_next_test_reaches_back_to_the_oldest_unverified_backup(client, now, days_ago):
    oldest = backup_at(client, days_ago(20))
    backup_at(client, days_ago(10))
    newest = backup_at(client, days_ago(1))
    restore_tests.schedule(now=days_ago(8))
    first = Job.objects.get(kind=JobKind.RESTORE_TEST)
    assert first.backup == newest
    run_job(first)
    Job.objects.filter(pk=first.pk).update(finished_at=days_ago(8))

    restore_tests.schedule(now=now)

    second = Job.objects.filter(kind=JobKind.RESTORE_TEST).exclude(pk=first.pk).get()
    assert second.backup == oldest


def test_passed_test_records_the_verification_and_its_job(client, now, days_ago):
    backup = backup_at(client, days_ago(1))
    restore_tests.schedule(now=now)
    job = run_job(Job.objects.get(kind=JobKind.RESTORE_TEST))
    backup.refresh_from_db()
    assert (backup.verification, backup.verification_job) == (Verification.PASSED, job)
    assert backup.verified_at == job.finished_at
    assert restore_tests.schedule(now=now + timedelta(days=1)) == 0  # tested within the interval


def test_failed_test_marks_the_backup_and_raises_one_critical_alert(client, now, days_ago):
    backup = backup_at(client, days_ago(1))
    restore_tests.schedule(now=now)
    run_job(Job.objects.get(kind=JobKind.RESTORE_TEST), ok=False)

    backup.refresh_from_db()
    assert backup.verification == Verification.FAILED
    alert = Alert.objects.get(kind=AlertKind.RESTORE_TEST_FAILED)
    assert (alert.severity, alert.client_id) == ("critical", client.pk)
    assert "mismatch" in alert.message
    assert not Job.objects.filter(kind=JobKind.RESTORE_TEST, state=JobState.QUEUED).exists()

    restore_tests.schedule(now=now)
    run_job(Job.objects.get(kind=JobKind.RESTORE_TEST, state=JobState.QUEUED))
    assert Alert.objects.get(kind=AlertKind.RESTORE_TEST_FAILED).resolved_at is not None


def test_restore_test_whose_agent_vanished_gives_no_verdict(client, now, days_ago):
    backup = backup_at(client, days_ago(1))
    restore_tests.schedule(now=now)
    job = Job.objects.get(kind=JobKind.RESTORE_TEST)
    jobs.claim(job.agent)
    Job.objects.filter(pk=job.pk).update(lease_expires_at=now - timedelta(seconds=1))
    jobs.reap_expired_leases()
    backup.refresh_from_db()
    assert backup.verification == ""
    assert not Alert.objects.exists()


def test_clients_without_backups_or_agent_are_not_tested(db, now, days_ago):
    factories.BackupClientFactory()
    waiting = factories.BackupClientFactory()
    backup_at(waiting, days_ago(1))
    BackupClient.objects.filter(pk=waiting.pk).update(agent=None, status=ClientStatus.PENDING_ENROLMENT)
    assert restore_tests.schedule(now=now) == 0


# --- retention --------------------------------------------------------------------------------


def test_expired_backups_are_queued_for_removal_then_marked_deleted(client, now, days_ago):
    old = backup_at(client, days_ago(40))
    fresh = backup_at(client, days_ago(1))

    assert retention.expire_due(now=now) == 1

    old.refresh_from_db()
    assert old.status == BackupStatus.EXPIRED
    removal = Job.objects.get(kind=JobKind.EXPIRE)
    assert (removal.backup, removal.agent) == (old, client.agent)
    removal = run_job(removal)
    old.refresh_from_db()
    assert (old.status, old.deleted_at) == (BackupStatus.DELETED, removal.finished_at)
    fresh.refresh_from_db()
    assert fresh.status == BackupStatus.AVAILABLE
    assert retention.expire_due(now=now) == 0


def test_a_failed_removal_is_queued_again(client, now, days_ago):
    backup_at(client, days_ago(40))
    retention.expire_due(now=now)
    run_job(Job.objects.get(kind=JobKind.EXPIRE), ok=False, error="Permission denied")
    assert retention.expire_due(now=now) == 1
    assert Job.objects.filter(kind=JobKind.EXPIRE, state=JobState.QUEUED).count() == 1


def test_legal_hold_is_never_expired(client, backup_admin, now, days_ago):
    held = backup_at(client, days_ago(40))
    retention.hold(held.pk, by=backup_admin, reason="Litigation 2026-17")
    assert retention.expire_due(now=now) == 0
    held.refresh_from_db()
    assert (held.status, held.legal_hold_by, held.legal_hold_reason) == (
        BackupStatus.AVAILABLE,
        backup_admin,
        "Litigation 2026-17",
    )


def test_hold_calls_off_a_removal_not_yet_started(client, backup_admin, now, days_ago):
    backup = backup_at(client, days_ago(40))
    retention.expire_due(now=now)
    retention.hold(backup.pk, by=backup_admin, reason="Audit request")
    assert Job.objects.get(kind=JobKind.EXPIRE).state == JobState.CANCELLED
    backup.refresh_from_db()
    assert backup.status == BackupStatus.AVAILABLE
    retention.release(backup.pk, by=backup_admin)
    assert retention.expire_due(now=now) == 1


def test_hold_needs_a_reason_and_refuses_a_removal_in_progress(client, backup_admin, now, days_ago):
    backup = backup_at(client, days_ago(40))
    with pytest.raises(InvalidTransition):
        retention.hold(backup.pk, by=backup_admin, reason=" ")
    retention.expire_due(now=now)
    jobs.claim(client.agent)
    with pytest.raises(InvalidTransition):
        retention.hold(backup.pk, by=backup_admin, reason="too late")


def test_the_database_refuses_deleting_before_expiry_or_under_hold(client, now, days_ago):
    fresh = backup_at(client, days_ago(1))
    with pytest.raises(IntegrityError), transaction.atomic():
        Backup.objects.filter(pk=fresh.pk).update(status=BackupStatus.DELETED, deleted_at=now)
    old = backup_at(client, days_ago(40), legal_hold=True, legal_hold_reason="case")
    with pytest.raises(IntegrityError), transaction.atomic():
        Backup.objects.filter(pk=old.pk).update(status=BackupStatus.DELETED, deleted_at=now)


# --- watches ------------------------------------------------------------------------------------


def test_rpo_breach_raises_one_alert_closed_by_the_next_good_backup(client, now):
    backup_at(client, now - timedelta(hours=client.policy.rpo_hours + 2))

    assert watch.watch_rpo(now=now) == 1
    assert watch.watch_rpo(now=now) == 0  # no flood when the watch runs again
    assert watch.watch_rpo(now=now + timedelta(minutes=15)) == 0
    alert = Alert.objects.get(kind=AlertKind.RPO_BREACHED)
    assert alert.severity == "critical" and alert.resolved_at is None

    job = jobs.queue_backup(client)
    jobs.claim(client.agent)
    report = jobs.BackupReport(size=1, stored_size=1, location="a/b/job", sha256="0" * 64)
    jobs.complete_success(client.agent, job.pk, report=report)

    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert watch.watch_rpo(now=timezone.now()) == 0


def test_client_within_rpo_raises_nothing(client, now):
    backup_at(client, now - timedelta(hours=1))
    assert watch.watch_rpo(now=now) == 0


def test_restore_test_overdue_alerts_once(client, now, days_ago):
    backup_at(client, days_ago(1))
    assert watch.watch_restore_tests(now=now) == 1
    assert watch.watch_restore_tests(now=now) == 0


def test_storage_over_85_percent_alerts_once_and_clears(client, days_ago):
    target = client.policy.storage_target
    StorageTarget.objects.filter(pk=target.pk).update(capacity_bytes=1000)
    backup = backup_at(client, days_ago(1), size_bytes=900, stored_size_bytes=900)

    assert watch.watch_storage() == 1
    assert watch.watch_storage() == 0
    target.refresh_from_db()
    assert target.used_bytes == 900

    Backup.objects.filter(pk=backup.pk).update(stored_size_bytes=100)
    watch.watch_storage()
    assert Alert.objects.get(kind=AlertKind.STORAGE_NEARLY_FULL).resolved_at is not None
