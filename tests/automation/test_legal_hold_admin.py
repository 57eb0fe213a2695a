"""Legal hold in the Backup admin: a reason is required, who and when are recorded, the change
history says why, and holding an expired backup calls off its removal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.urls import reverse
from django.utils import timezone

from catalog.choices import BackupStatus, JobKind, JobState, JobTrigger
from catalog.models import Backup, Job
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, backup_admin):
    client.force_login(backup_admin)
    return client


@pytest.fixture
def backup(orders_clients):
    return factories.BackupFactory(client=orders_clients[0])


def change_url(backup) -> str:
    return reverse("admin:catalog_backup_change", args=[backup.pk])


def save(admin_client, backup, *, hold: bool, reason: str = ""):
    data = {"legal_hold_reason": reason, "_save": "Save"}
    if hold:
        data["legal_hold"] = "on"
    return admin_client.post(change_url(backup), data, follow=True)


def log_of(backup) -> list[LogEntry]:
    return list(LogEntry.objects.filter(object_id=str(backup.pk), action_flag=CHANGE).order_by("pk"))


def test_setting_a_hold_records_who_when_and_why(admin_client, backup_admin, backup):
    before = timezone.now()
    response = save(admin_client, backup, hold=True, reason="Litigation 2024-117, legal@ asked")
    assert response.status_code == 200
    backup.refresh_from_db()
    assert backup.legal_hold
    assert backup.legal_hold_reason == "Litigation 2024-117, legal@ asked"
    assert backup.legal_hold_by == backup_admin
    assert before <= backup.legal_hold_at <= timezone.now()
    [entry] = log_of(backup)
    assert entry.user == backup_admin
    assert entry.get_change_message() == "Legal hold set: Litigation 2024-117, legal@ asked"


def test_a_hold_needs_a_reason(admin_client, backup):
    response = save(admin_client, backup, hold=True, reason="   ")
    assert "Say why the backup is on legal hold." in response.content.decode()
    backup.refresh_from_db()
    assert not backup.legal_hold
    assert log_of(backup) == []


def test_releasing_a_hold_is_recorded_too(admin_client, backup_admin, backup, superuser):
    Backup.objects.filter(pk=backup.pk).update(
        legal_hold=True, legal_hold_reason="Audit", legal_hold_by=superuser, legal_hold_at=timezone.now()
    )
    save(admin_client, backup, hold=False, reason="Audit")
    backup.refresh_from_db()
    assert not backup.legal_hold
    assert backup.legal_hold_reason == ""
    assert backup.legal_hold_by == backup_admin
    [entry] = log_of(backup)
    assert entry.get_change_message() == "Legal hold released"


def test_changing_the_reason_is_recorded(admin_client, backup, superuser):
    Backup.objects.filter(pk=backup.pk).update(
        legal_hold=True, legal_hold_reason="Audit", legal_hold_by=superuser, legal_hold_at=timezone.now()
    )
    save(admin_client, backup, hold=True, reason="Audit, extended to 2030 by legal")
    [entry] = log_of(backup)
    assert entry.get_change_message() == "Legal hold reason changed: Audit, extended to 2030 by legal"


def test_holding_an_expired_backup_calls_off_its_removal(admin_client, orders_clients):
    taken = timezone.now() - timedelta(days=40)
    backup = factories.BackupFactory(
        client=orders_clients[0],
        taken_at=taken,
        expires_at=taken + timedelta(days=30),
        status=BackupStatus.EXPIRED,
    )
    removal = factories.JobFactory(
        kind=JobKind.EXPIRE, client=backup.client, backup=backup, trigger=JobTrigger.SYSTEM
    )
    save(admin_client, backup, hold=True, reason="Subpoena 88")
    backup.refresh_from_db()
    removal.refresh_from_db()
    assert backup.legal_hold
    assert backup.status == BackupStatus.AVAILABLE
    assert removal.state == JobState.CANCELLED


def test_a_removal_already_running_is_reported_not_half_held(admin_client, orders_clients):
    taken = timezone.now() - timedelta(days=40)
    backup = factories.BackupFactory(
        client=orders_clients[0],
        taken_at=taken,
        expires_at=taken + timedelta(days=30),
        status=BackupStatus.EXPIRED,
    )
    factories.JobFactory(
        kind=JobKind.EXPIRE,
        client=backup.client,
        backup=backup,
        state=JobState.RUNNING,
        lease_expires_at=timezone.now() + timedelta(minutes=2),
    )
    response = save(admin_client, backup, hold=True, reason="Subpoena 88")
    page = response.content.decode()
    assert "Legal hold not changed" in page
    assert "was changed successfully" not in page
    backup.refresh_from_db()
    assert not backup.legal_hold
    assert log_of(backup) == []
    assert Job.objects.filter(backup=backup, state=JobState.RUNNING).exists()


def test_saving_without_touching_the_hold_logs_nothing_special(admin_client, backup):
    save(admin_client, backup, hold=False, reason="")
    backup.refresh_from_db()
    assert not backup.legal_hold
    assert backup.legal_hold_by is None
