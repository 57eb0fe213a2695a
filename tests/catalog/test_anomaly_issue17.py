"""Issue #17: the anomaly check's defects a reviewer found.

Last known clean looks at the whole chain; acknowledging needs MFA and tells the backup team;
retention waits while a client is under suspicion; ``suspicious()`` counts what is still stored
of clients not retired; the safety net marks a point it cannot judge and moves on; a retired
host's expired points raise one alert per client. (``shrink_size`` on fulls only:
test_anomaly_rules.py.)
"""

from __future__ import annotations

import zlib
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.choices import AlertKind, AlertSeverity, BackupStatus, ClientStatus, JobKind
from catalog.models import Alert, Backup, Job
from catalog.services import alerts, anomalies, retention
from core.errors import MfaRequired
from tests import factories
from tests.identity.totp import mark_oidc_amr

pytestmark = pytest.mark.django_db

EVIDENCE = {"version": 1, "rules": ["changed_burst"], "summaries": ["290 of 300 files changed (97%)"]}
NEEDS_MFA = "needs a session that passed multi-factor authentication"


@pytest.fixture
def mfa_on(settings):
    settings.PORTAL_MFA_FOR_APPROVALS = True


def flag(*points: Backup) -> None:
    Backup.objects.filter(pk__in=[p.pk for p in points]).update(
        anomaly=EVIDENCE, anomaly_checked_at=timezone.now()
    )


def raise_anomaly_alert(point: Backup) -> Alert:
    return alerts.raise_client_alert(
        AlertKind.ANOMALY_DETECTED,
        AlertSeverity.CRITICAL,
        point.client,
        f"Backup {point.pk} of {point.client} is unlike its history",
        job=point.job,
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- 1. last known clean: the whole chain ------------------------------------------------------


def test_last_known_clean_skips_an_incremental_whose_chain_holds_a_suspicious_point():
    client = factories.incremental_client()
    now = timezone.now()
    older = factories.build_chain(client, 2, start=now - timedelta(days=10))
    full, clean_incremental, encrypted = factories.build_chain(client, 3, start=now - timedelta(days=5))
    flag(full, encrypted)  # the full's files encrypted; little changed the next day; then again

    # I1 is clean itself, but restoring it restores F: the last clean point is the older chain's.
    assert anomalies.last_known_clean(client) == older[-1]
    for chosen in (clean_incremental, encrypted):
        warning = anomalies.restore_warning(Backup.objects.get(pk=chosen.pk))
        assert warning is not None and warning.clean == older[-1]

    # A suspicious incremental taints what comes after it in its chain, not what comes before.
    flag(older[-1])
    Backup.objects.filter(pk__in=[full.pk, encrypted.pk]).update(anomaly={})
    assert anomalies.last_known_clean(client) == older[0]
    Backup.objects.filter(pk=older[-1].pk).update(anomaly={})
    flag(clean_incremental)
    assert anomalies.last_known_clean(client) == full


# --- 3. acknowledging: MFA, and the team is told ------------------------------------------------


@pytest.fixture
def flagged(app):
    estate = factories.build_estate(app)
    flag(estate.backup)
    raise_anomaly_alert(estate.backup)
    return Backup.objects.get(pk=estate.backup.pk)


def test_an_owner_acknowledging_without_mfa_is_refused_and_nothing_changes(client, owner, flagged, mfa_on):
    client.force_login(owner)
    url = reverse("catalog:acknowledge-anomaly", args=[flagged.client_id, flagged.pk])

    response = client.post(url, {"note": "one-off import"}, follow=True)

    assert any(NEEDS_MFA in m for m in messages_of(response))
    assert 'href="/account/mfa/verify/?next=' in response.text
    assert Backup.objects.get(pk=flagged.pk).suspicious
    alert = Alert.objects.get(kind=AlertKind.ANOMALY_DETECTED)
    assert alert.resolved_at is None and "acknowledged" not in alert.message
    with pytest.raises(MfaRequired):
        anomalies.acknowledge(flagged, by=owner, note="one-off import", mfa=False)


def test_an_owner_with_mfa_acknowledges_and_the_alert_keeps_who_and_why(client, owner, flagged, mfa_on):
    client.force_login(owner)
    mark_oidc_amr(client)
    url = reverse("catalog:acknowledge-anomaly", args=[flagged.client_id, flagged.pk])

    assert client.post(url, {"note": "one-off import of the 2019 archive"}).status_code == 302

    point = Backup.objects.get(pk=flagged.pk)
    assert not point.suspicious and point.anomaly_acknowledged_by == owner
    alert = Alert.objects.get(kind=AlertKind.ANOMALY_DETECTED)
    assert alert.resolved_at is not None
    assert alert.message.startswith(f"Backup {flagged.pk} of ")
    assert (
        f"Backup {flagged.pk} acknowledged as expected by {owner}: one-off import of the 2019 archive"
        in alert.message
    )


def test_the_admin_action_needs_mfa_too(team_client, backup_admin, flagged, mfa_on):
    changelist = reverse("admin:catalog_backup_changelist")
    form = {"action": "acknowledge_anomaly", "_selected_action": [flagged.pk]}

    refused = team_client.post(changelist, form, follow=True)
    assert any(NEEDS_MFA in m for m in messages_of(refused))
    assert Backup.objects.get(pk=flagged.pk).suspicious

    mark_oidc_amr(team_client)
    accepted = team_client.post(changelist, form, follow=True)
    assert "1 suspicious backup(s) acknowledged" in accepted.text
    assert not Backup.objects.get(pk=flagged.pk).suspicious
    assert f"acknowledged as expected by {backup_admin}" in Alert.objects.get().message


def test_with_mfa_for_approvals_off_acknowledging_needs_no_mfa(owner, flagged, settings):
    settings.PORTAL_MFA_FOR_APPROVALS = False
    assert anomalies.acknowledge(flagged, by=owner, note="expected", mfa=False)


# --- 4. retention waits while a client is under suspicion ---------------------------------------


def test_retention_waits_while_a_newer_point_is_suspicious_and_goes_on_once_acknowledged(app, owner):
    now = timezone.now()
    estate = factories.build_estate(app)
    Backup.objects.filter(pk=estate.backup.pk).delete()
    old = [
        factories.BackupFactory(
            client=estate.client,
            taken_at=now - timedelta(days=40 - n),
            expires_at=now - timedelta(days=5 - n),
        )
        for n in range(2)
    ]
    newest = factories.BackupFactory(client=estate.client, taken_at=now - timedelta(days=1))
    flag(newest)
    elsewhere = factories.BackupFactory(
        taken_at=now - timedelta(days=40), expires_at=now - timedelta(days=5)
    )  # another client's point: not held

    assert retention.expire_due(now=now) == 1
    assert Backup.objects.get(pk=elsewhere.pk).status == BackupStatus.EXPIRED
    assert [Backup.objects.get(pk=p.pk).status for p in old] == [BackupStatus.AVAILABLE] * 2

    assert anomalies.acknowledge(newest, by=owner, note="expected", mfa=True)
    assert retention.expire_due(now=now) == 2
    assert [Backup.objects.get(pk=p.pk).status for p in old] == [BackupStatus.EXPIRED] * 2


# --- 5. suspicious(): stored points of clients not retired ---------------------------------------


def test_suspicious_counts_stored_points_of_clients_not_retired(app):
    now = timezone.now()
    estate = factories.build_estate(app)
    past = now - timedelta(days=1)
    deleted = factories.BackupFactory(
        client=estate.client,
        taken_at=now - timedelta(days=40),
        expires_at=past,
        status=BackupStatus.DELETED,
        deleted_at=now,
    )
    expired = factories.BackupFactory(
        client=estate.client, taken_at=now - timedelta(days=39), expires_at=past, status=BackupStatus.EXPIRED
    )
    retired_client = factories.BackupClientFactory(application=app, status=ClientStatus.RETIRED)
    retired = factories.BackupFactory(client=retired_client)
    flag(estate.backup, deleted, expired, retired)

    assert set(Backup.objects.suspicious()) == {estate.backup, expired}
    assert Backup.objects.suspicious().count() == 2  # the metric's count
    # A question about one point still sees it: a retired client's points can be restored.
    assert set(Backup.objects.flagged()) == {estate.backup, deleted, expired, retired}
    assert anomalies.restore_warning(factories.BackupFactory(client=retired_client)).flagged == retired


# --- 6. the safety net marks a point it cannot judge and moves on --------------------------------


def test_a_point_whose_check_always_raises_is_marked_and_does_not_hold_up_the_others(app, monkeypatch):
    estate = factories.build_estate(app)
    now = timezone.now()
    broken = factories.BackupFactory(client=estate.client, taken_at=now - timedelta(hours=2))
    fine = factories.BackupFactory(client=estate.client, taken_at=now - timedelta(hours=1))
    real = anomalies.file_changes
    calls = []

    def file_changes(backup):
        calls.append(backup.pk)
        if backup.pk == broken.pk:
            raise zlib.error("Error -3 while decompressing data: invalid block type")
        return real(backup)

    monkeypatch.setattr(anomalies, "file_changes", file_changes)

    assert anomalies.check_missed(now=now) == 2  # the estate's point and ``fine``
    broken.refresh_from_db()
    assert broken.anomaly_checked_at is not None and not broken.suspicious
    assert "invalid block type" in broken.anomaly["error"] and "rules" not in broken.anomaly
    assert Backup.objects.get(pk=fine.pk).anomaly_checked_at is not None
    calls.clear()
    assert anomalies.check_missed(now=now) == 0
    assert calls == []  # not tried again


# --- 7. a retired host's expired points: one alert per client ------------------------------------


def test_expired_points_of_a_revoked_agent_raise_one_alert_per_client(app):
    now = timezone.now()
    target = factories.StorageTargetFactory(name="nas-1", location="/mnt/nas1")
    policy = factories.ProtectionPolicyFactory(storage_target=target)
    agent = factories.AgentFactory(applications=[app], revoked_at=now - timedelta(days=1))
    retired = factories.BackupClientFactory(
        application=app, agent=agent, policy=policy, status=ClientStatus.RETIRED, name="web01-files"
    )
    points = [
        factories.BackupFactory(
            client=retired,
            taken_at=now - timedelta(days=40 - n),
            expires_at=now - timedelta(days=5 - n),
            location=f"{app.slug}/web01-files/job-{n}",
        )
        for n in range(3)
    ]

    assert retention.expire_due(now=now) == 0  # no expire job: nobody would claim it
    assert {Backup.objects.get(pk=p.pk).status for p in points} == {BackupStatus.EXPIRED}
    assert not Job.objects.filter(kind=JobKind.EXPIRE).exists()
    alert = Alert.objects.get(key=retention.unremovable_key(retired.pk))
    assert alert.client_id == retired.pk and alert.application_id == app.pk
    assert alert.message == (
        f"3 expired recovery points of {retired} remain on nas-1 at /mnt/nas1/{app.slug}/web01-files; "
        "its agent was revoked when the host was retired: remove them by hand (docs/agent.md, "
        "Decommissioning) or re-enrol the host"
    )

    assert retention.expire_due(now=now) == 0
    Alert.objects.filter(pk=alert.pk).update(resolved_at=now)  # even once resolved: raised once
    assert retention.expire_due(now=now) == 0
    assert Alert.objects.filter(key=retention.unremovable_key(retired.pk)).count() == 1


def test_unremovable_alerts_read_the_points_of_every_client_at_once(app):
    """One read of the expired points and no read of a client's application per client, however many."""
    now = timezone.now()
    policy = factories.ProtectionPolicyFactory()
    agent = factories.AgentFactory(applications=[app], revoked_at=now - timedelta(days=1))
    for n in range(3):
        retired = factories.BackupClientFactory(
            application=app, agent=agent, policy=policy, status=ClientStatus.RETIRED, name=f"web0{n}-files"
        )
        factories.BackupFactory(
            client=retired,
            status=BackupStatus.EXPIRED,
            taken_at=now - timedelta(days=40),
            expires_at=now - timedelta(days=5),
            location=f"{app.slug}/web0{n}-files/job-1",
        )

    with CaptureQueriesContext(connection) as queries:
        retention._alert_unremovable()

    # Reads whose first FROM is the points or the applications: the points once, applications never.
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    tables = ('"catalog_backup" ', '"catalog_application" ')
    assert len([sql for sql in reads if sql.split(" FROM ", 1)[-1].startswith(tables)]) == 1
    assert Alert.objects.filter(kind=AlertKind.EXPIRED_NOT_REMOVED).count() == 3
