"""The catalog's invariants are kept by the database, not only by forms.

Each test writes one row that breaks a named constraint (through ``update()``
or a direct ``create()``, so no model validation stands in the way), checks
that the database refuses it with that constraint, and then writes the valid
neighbour to show the constraint is not simply refusing everything.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from catalog.choices import AgentAction, ClientStatus, Compression, JobKind, JobState
from catalog.models import (
    Agent,
    AgentEvent,
    Alert,
    Application,
    Backup,
    BackupClient,
    CostCenter,
    Job,
    ProtectionPolicy,
    StorageTarget,
)
from catalog.services import agents
from tests import factories

pytestmark = pytest.mark.django_db


@contextmanager
def refused_by(*names: str):
    """The write inside must fail with an IntegrityError whose message names one of ``names``.

    SQLite names a check constraint ("CHECK constraint failed: backup_size_gte_0")
    and a unique one by its columns ("catalog_agent.hostname"); PostgreSQL names
    the constraint and repeats the columns in DETAIL ("Key (hostname)=(…)").
    The savepoint lets the test carry on after the failure.
    """
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        yield
    message = str(excinfo.value)
    assert any(name in message for name in names), f"expected one of {names} in {message!r}"


def unique_on(table: str, *columns: str) -> tuple[str, str]:
    """How SQLite and PostgreSQL name a unique violation on ``columns`` of ``table``."""
    sqlite = ", ".join(f"{table}.{column}" for column in columns)
    postgres = f"Key ({', '.join(columns)})="
    return sqlite, postgres


def update(obj, **fields):
    """Write ``fields`` with a queryset update (no model validation) and return the row as stored."""
    type(obj).objects.filter(pk=obj.pk).update(**fields)
    obj.refresh_from_db()
    return obj


# --- Uniqueness ------------------------------------------------------------------------


def test_two_agents_cannot_share_a_hostname():
    Agent.objects.create(hostname="db01.example.com")
    with refused_by(*unique_on("catalog_agent", "hostname")):
        Agent.objects.create(hostname="db01.example.com")
    Agent.objects.create(hostname="db02.example.com")
    assert Agent.objects.count() == 2


def test_two_applications_cannot_share_a_slug():
    cost_center = factories.CostCenterFactory()
    Application.objects.create(slug="orders", name="Orders", cost_center=cost_center)
    with refused_by(*unique_on("catalog_application", "slug")):
        Application.objects.create(slug="orders", name="Orders again", cost_center=cost_center)
    Application.objects.create(slug="orders-eu", name="Orders EU", cost_center=cost_center)
    assert Application.objects.count() == 2


def test_two_cost_centres_cannot_share_a_code():
    CostCenter.objects.create(code="FIN-01", name="Finance", owner_email="fin@example.com")
    with refused_by(*unique_on("catalog_costcenter", "code")):
        CostCenter.objects.create(code="FIN-01", name="Finance 2", owner_email="fin@example.com")
    CostCenter.objects.create(code="FIN-02", name="Finance 2", owner_email="fin@example.com")
    assert CostCenter.objects.count() == 2


def test_two_storage_targets_cannot_share_a_name():
    factories.StorageTargetFactory(name="dd-primary")
    with refused_by(*unique_on("catalog_storagetarget", "name")):
        factories.StorageTargetFactory(name="dd-primary")
    factories.StorageTargetFactory(name="dd-secondary")
    assert StorageTarget.objects.count() == 2


def test_two_policies_cannot_share_a_name():
    target = factories.StorageTargetFactory()
    factories.ProtectionPolicyFactory(name="Gold", storage_target=target)
    with refused_by(*unique_on("catalog_protectionpolicy", "name")):
        factories.ProtectionPolicyFactory(name="Gold", storage_target=target)
    factories.ProtectionPolicyFactory(name="Silver", storage_target=target)
    assert ProtectionPolicy.objects.count() == 2


def test_client_name_is_unique_within_its_application_only():
    orders, payroll = factories.ApplicationFactory(), factories.ApplicationFactory()
    factories.BackupClientFactory(application=orders, name="db")
    with refused_by("client_unique_name", *unique_on("catalog_backupclient", "application_id", "name")):
        factories.BackupClientFactory(application=orders, name="db")
    # The same name in another application is another workload.
    factories.BackupClientFactory(application=payroll, name="db")
    assert BackupClient.objects.filter(name="db").count() == 2


def test_a_job_produces_at_most_one_backup():
    backup = factories.BackupFactory()
    with refused_by(*unique_on("catalog_backup", "job_id")):
        factories.BackupFactory(client=backup.client, job=backup.job)
    factories.BackupFactory(client=backup.client)  # another job, another recovery point
    assert Backup.objects.filter(client=backup.client).count() == 2


# --- Sizes, capacities and counters ----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "constraint"),
    [("size_bytes", "backup_size_gte_0"), ("stored_size_bytes", "backup_stored_size_gte_0")],
)
def test_backup_sizes_cannot_be_negative(field, constraint):
    backup = factories.BackupFactory()
    with refused_by(constraint):
        update(backup, **{field: -1})
    assert getattr(update(backup, **{field: 0}), field) == 0


def test_job_bytes_done_cannot_be_negative():
    job = factories.JobFactory()
    with refused_by("job_bytes_done_gte_0"):
        update(job, bytes_done=-1)
    assert update(job, bytes_done=0).bytes_done == 0


def test_job_bytes_total_cannot_be_negative_but_may_be_unknown():
    job = factories.JobFactory(bytes_total=100)
    with refused_by("job_bytes_total_gte_0"):
        update(job, bytes_total=-1)
    assert update(job, bytes_total=None).bytes_total is None
    assert update(job, bytes_total=0).bytes_total == 0


def test_job_attempts_count_from_one():
    job = factories.JobFactory()
    with refused_by("job_attempt_gte_1"):
        update(job, attempt=0)
    assert update(job, attempt=2).attempt == 2


def test_storage_used_cannot_be_negative():
    target = factories.StorageTargetFactory()
    with refused_by("storagetarget_used_gte_0"):
        update(target, used_bytes=-1)
    assert update(target, used_bytes=0).used_bytes == 0


def test_storage_capacity_must_be_positive():
    target = factories.StorageTargetFactory()
    with refused_by("storagetarget_capacity_positive"):
        update(target, capacity_bytes=0)
    assert update(target, capacity_bytes=1).capacity_bytes == 1


# --- Policies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "constraint"),
    [
        ("retention_days", "policy_retention_positive"),
        ("rpo_hours", "policy_rpo_positive"),
        ("restore_test_interval_days", "policy_restore_test_interval_positive"),
    ],
)
def test_policy_periods_must_be_positive(field, constraint):
    policy = factories.ProtectionPolicyFactory()
    with refused_by(constraint):
        update(policy, **{field: 0})
    assert getattr(update(policy, **{field: 1}), field) == 1


def test_policy_price_cannot_be_negative_but_may_be_free():
    policy = factories.ProtectionPolicyFactory()
    with refused_by("policy_price_gte_0"):
        update(policy, price_per_gb_month=Decimal("-0.0001"))
    assert update(policy, price_per_gb_month=Decimal("0")).price_per_gb_month == 0


# --- Backups ---------------------------------------------------------------------------


def test_backup_expires_after_it_was_taken():
    backup = factories.BackupFactory()
    with refused_by("backup_expires_after_taken"):
        update(backup, expires_at=F("taken_at"))
    with refused_by("backup_expires_after_taken"):
        update(backup, expires_at=F("taken_at") - timedelta(days=1))
    assert update(backup, expires_at=F("taken_at") + timedelta(seconds=1)).expires_at > backup.taken_at


def test_legal_hold_needs_a_reason():
    backup = factories.BackupFactory()
    with refused_by("backup_legal_hold_has_reason"):
        update(backup, legal_hold=True, legal_hold_reason="")
    held = update(backup, legal_hold=True, legal_hold_reason="Litigation 2026-114")
    assert held.legal_hold is True
    # A reason left behind after the hold is lifted is harmless.
    assert update(backup, legal_hold=False).legal_hold is False


@pytest.mark.parametrize("checksum", ["", "ab" * 31 + "a"], ids=["empty", "63-chars"])
def test_backup_checksum_is_a_full_sha256(checksum):
    backup = factories.BackupFactory()
    with refused_by("backup_sha256_length"):
        update(backup, sha256=checksum)
    assert update(backup, sha256="0" * 64).sha256 == "0" * 64


# --- Clients and jobs ------------------------------------------------------------------


def test_active_client_needs_an_agent():
    client = factories.BackupClientFactory(agent=None, status=ClientStatus.PENDING_ENROLMENT)
    with refused_by("client_active_has_agent"):
        update(client, status=ClientStatus.ACTIVE)
    # Paused and retired clients may have lost their agent; an active one with an agent is fine.
    assert update(client, status=ClientStatus.PAUSED).status == ClientStatus.PAUSED
    agent = factories.AgentFactory()
    assert update(client, status=ClientStatus.ACTIVE, agent=agent).status == ClientStatus.ACTIVE


def test_running_job_needs_a_lease():
    job = factories.JobFactory()
    with refused_by("job_running_has_lease"):
        update(job, state=JobState.RUNNING)
    running = update(job, state=JobState.RUNNING, lease_expires_at=timezone.now() + timedelta(minutes=2))
    assert running.state == JobState.RUNNING


@pytest.mark.parametrize("kind", [JobKind.RESTORE, JobKind.RESTORE_TEST, JobKind.EXPIRE])
def test_non_backup_job_must_name_the_backup_it_acts_on(kind):
    backup = factories.BackupFactory()
    client = backup.client
    with refused_by("job_non_backup_names_backup"):
        Job.objects.create(kind=kind, client=client, agent=client.agent)
    job = Job.objects.create(kind=kind, client=client, agent=client.agent, backup=backup)
    assert job.backup == backup


def test_backup_job_needs_no_backup():
    client = factories.BackupClientFactory()
    job = Job.objects.create(kind=JobKind.BACKUP, client=client, agent=client.agent)
    assert job.backup is None


# --- Alerts ----------------------------------------------------------------------------


def test_only_one_open_alert_per_key():
    first = factories.AlertFactory(key="rpo_breached:client:5")
    with refused_by("alert_one_open_per_key", *unique_on("catalog_alert", "key")):
        factories.AlertFactory(key="rpo_breached:client:5", client=first.client)
    assert Alert.objects.filter(key="rpo_breached:client:5").count() == 1

    # Once resolved, the same condition may be raised again, as often as it recurs.
    update(first, resolved_at=timezone.now())
    second = factories.AlertFactory(key="rpo_breached:client:5", client=first.client)
    update(second, resolved_at=timezone.now())
    factories.AlertFactory(key="rpo_breached:client:5", client=first.client)
    assert Alert.objects.filter(key="rpo_breached:client:5").count() == 3
    assert Alert.objects.open().filter(key="rpo_breached:client:5").count() == 1


def test_acknowledgement_records_who_and_when():
    alert = factories.AlertFactory()
    person = factories.UserFactory()
    with refused_by("alert_ack_has_who_and_when"):
        update(alert, acknowledged_at=timezone.now())
    with refused_by("alert_ack_has_who_and_when"):
        update(alert, acknowledged_by=person)
    acked = update(alert, acknowledged_at=timezone.now(), acknowledged_by=person)
    assert acked.acknowledged_by == person


# --- Storage and enrolment -------------------------------------------------------------


def test_uncompressed_storage_refuses_gzip():
    with refused_by("storagetarget_uncompressed_means_no_gzip"):
        factories.StorageTargetFactory(keep_uncompressed=True, compression=Compression.GZIP)
    target = factories.StorageTargetFactory(keep_uncompressed=False, compression=Compression.GZIP)
    with refused_by("storagetarget_uncompressed_means_no_gzip"):
        update(target, keep_uncompressed=True)
    assert update(target, keep_uncompressed=True, compression=Compression.NONE).keep_uncompressed


def test_used_enrolment_token_names_the_agent_it_enrolled():
    application = factories.ApplicationFactory()
    token, _ = agents.issue_enrolment_token(application=application, hostname="db09.example.com")
    with refused_by("enrolmenttoken_used_names_agent"):
        update(token, used_at=timezone.now())
    agent = factories.AgentFactory(hostname="db09.example.com")
    assert update(token, used_at=timezone.now(), agent=agent).agent == agent


def test_agent_history_is_append_only():
    event = agents.record(factories.AgentFactory(), AgentAction.ENROLLED, message="first")
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AgentEvent.objects.filter(pk=event.pk).update(message="rewritten")
    with pytest.raises(PermissionError):
        AgentEvent.objects.all().delete()
    assert AgentEvent.objects.get(pk=event.pk).message == "first"
