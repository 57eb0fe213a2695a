"""Alert routing: critical alerts mailed at once to owners and team, once; the rest in one daily
digest per person, about nothing the person cannot see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from catalog import notify, tasks
from catalog.choices import AlertKind, AlertSeverity
from catalog.models import Alert
from catalog.services import alerts
from tests import factories
from tests.automation.team import TEAM_ADDRESS

pytestmark = pytest.mark.django_db


class BrokenMailServer(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise ConnectionRefusedError("mail server down")


class MailboxRefusingPayroll(BaseEmailBackend):
    def send_messages(self, email_messages):
        if any("other_owner@example.com" in message.to for message in email_messages):
            raise ConnectionRefusedError("mailbox full")
        mail.outbox.extend(email_messages)
        return len(email_messages)


def raise_critical(client, *, kind=AlertKind.RESTORE_TEST_FAILED):
    return alerts.raise_alert(
        kind=kind,
        severity=AlertSeverity.CRITICAL,
        key=alerts.client_key(kind, client.pk),
        message=f"Restore test of {client} failed (checksum mismatch).",
        application_id=client.application_id,
        client_id=client.pk,
    )


def warn(client=None, *, kind=AlertKind.RESTORE_TEST_OVERDUE, **links):
    links.setdefault("client", client)
    links.setdefault("application", client.application if client else None)
    return factories.AlertFactory(kind=kind, severity=AlertSeverity.WARNING, **links)


def recipients(message) -> set[str]:
    return set(message.to)


# --- Critical alerts: at once ---------------------------------------------------------------


def test_critical_alert_is_mailed_at_once_to_owners_and_team(
    owner, app, orders_clients, backup_admin, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_critical(orders_clients[0])

    assert [recipients(m) for m in mail.outbox] == [
        {owner.email},
        {TEAM_ADDRESS, backup_admin.email},
    ]
    owners_mail, team_mail = mail.outbox
    assert owners_mail.subject == "[Backup Portal] CRITICAL: Restore test failed in Orders"
    assert "checksum mismatch" in owners_mail.body
    assert "https://backup.example.com/alerts/?application=orders" in owners_mail.body
    assert "you own Orders" in owners_mail.body
    assert f"/admin/catalog/alert/{alert.pk}/change/" in team_mail.body
    alert.refresh_from_db()
    assert alert.emailed_at is not None


def test_critical_alert_is_mailed_once(app, orders_clients, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_critical(orders_clients[0])
    sent = len(mail.outbox)

    assert tasks.mail_alert(alert.pk) == 0  # a retried or duplicated task
    with django_capture_on_commit_callbacks(execute=True):
        assert raise_critical(orders_clients[0]) is None  # the watch runs again: same open alert
    assert tasks.mail_unsent_critical() == 0
    assert len(mail.outbox) == sent == 2


def test_owners_by_group_are_mailed_and_inactive_or_addressless_ones_are_not(
    owner, app, orders_clients, django_capture_on_commit_callbacks
):
    group = Group.objects.create(name="orders-devs")
    member = factories.UserFactory(username="dev")
    member.groups.add(group)
    app.owner_group = group
    app.save()
    app.owners.add(factories.UserFactory(username="left", is_active=False))
    app.owners.add(factories.UserFactory(username="no-mail", email=""))

    with django_capture_on_commit_callbacks(execute=True):
        raise_critical(orders_clients[0])

    assert recipients(mail.outbox[0]) == {owner.email, member.email}


def test_an_owner_on_the_backup_team_gets_one_mail(
    owner, app, orders_clients, backup_team_group, django_capture_on_commit_callbacks
):
    owner.groups.add(backup_team_group)
    with django_capture_on_commit_callbacks(execute=True):
        raise_critical(orders_clients[0])
    assert [recipients(m) for m in mail.outbox] == [{TEAM_ADDRESS, owner.email}]


def test_critical_alert_of_no_application_goes_to_the_team_only(
    owner, app, backup_admin, django_capture_on_commit_callbacks
):
    target = factories.StorageTargetFactory(name="primary")
    with django_capture_on_commit_callbacks(execute=True):
        alerts.raise_alert(
            kind=AlertKind.STORAGE_NEARLY_FULL,
            severity=AlertSeverity.CRITICAL,
            key=f"storage:{target.pk}",
            message="Storage target primary is 96% full.",
            storage_target=target,
        )
    assert [recipients(m) for m in mail.outbox] == [{TEAM_ADDRESS, backup_admin.email}]
    assert "shared infrastructure" in mail.outbox[0].subject


def test_other_owners_are_not_mailed(
    owner, other_owner, app, other_app, orders_clients, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        raise_critical(orders_clients[0])
    assert other_owner.email not in {address for m in mail.outbox for address in m.to}


def test_non_critical_alert_is_not_mailed_at_once(app, orders_clients, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alerts.raise_alert(
            kind=AlertKind.RESTORE_TEST_OVERDUE,
            severity=AlertSeverity.WARNING,
            key="overdue:1",
            message="No restore test in 30 days.",
            application_id=orders_clients[0].application_id,
            client_id=orders_clients[0].pk,
        )
    assert mail.outbox == []
    assert Alert.objects.get().emailed_at is None


def test_failed_critical_mail_is_given_back_for_a_retry(app, orders_clients, settings):
    alert = factories.AlertFactory(client=orders_clients[0], severity=AlertSeverity.CRITICAL)
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailServer"
    with pytest.raises(ConnectionRefusedError):
        tasks.mail_alert(alert.pk)
    alert.refresh_from_db()
    assert alert.emailed_at is None

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert tasks.mail_alert(alert.pk) == 2


def test_sweep_mails_recent_critical_alerts_the_queue_lost_but_not_old_ones(app, orders_clients):
    now = timezone.now()
    lost = factories.AlertFactory(
        client=orders_clients[0], severity=AlertSeverity.CRITICAL, created_at=now - timedelta(minutes=20)
    )
    factories.AlertFactory(  # raised a minute ago: its own mail task is probably still on its way
        client=orders_clients[1], severity=AlertSeverity.CRITICAL, created_at=now - timedelta(minutes=1)
    )
    factories.AlertFactory(  # history from before alert mail existed
        client=orders_clients[2], severity=AlertSeverity.CRITICAL, created_at=now - timedelta(days=3)
    )

    assert tasks.mail_unsent_critical() == 1
    assert list(Alert.objects.filter(emailed_at__isnull=False)) == [lost]


# --- The daily digest ------------------------------------------------------------------------


@pytest.fixture
def day_of_alerts(app, other_app, orders_clients, payroll_client):
    """Orders: three overdue restore tests (one cleared since) and a silent agent; Payroll: a silent
    agent; shared: a storage target filling up; plus a critical alert, which is not digest material."""
    overdue = [warn(client) for client in orders_clients]
    overdue[2].resolved_at = timezone.now()
    overdue[2].save()
    orders_agent = factories.AgentFactory(hostname="app01.orders.example.com", applications=[app])
    payroll_agent = factories.AgentFactory(hostname="pay01.payroll.example.com", applications=[other_app])
    warn(kind=AlertKind.AGENT_SILENT, agent=orders_agent, application=app)
    warn(kind=AlertKind.AGENT_SILENT, agent=payroll_agent, application=other_app)
    warn(kind=AlertKind.STORAGE_NEARLY_FULL, storage_target=factories.StorageTargetFactory(name="primary"))
    critical = factories.AlertFactory(client=orders_clients[0], severity=AlertSeverity.CRITICAL)
    return critical


def test_one_digest_per_person_per_day(owner, other_owner, backup_admin, day_of_alerts):
    assert tasks.send_digests() == 3
    assert [recipients(m) for m in mail.outbox] == [
        {TEAM_ADDRESS, backup_admin.email},
        {owner.email},
        {other_owner.email},
    ]

    assert tasks.send_digests() == 0  # the same day, again: nothing new
    assert len(mail.outbox) == 3


def test_digest_is_a_summary_of_what_the_owner_may_see(owner, day_of_alerts):
    tasks.send_digests()
    body = next(m for m in mail.outbox if m.to == [owner.email]).body

    assert "4 new alerts since the last digest, in 1 application; 3 still open, 1 cleared since." in body
    assert "Orders\n" in body
    assert "  - 3 clients are overdue for a restore test: db01-pg, files-web, mysql (1 cleared since)" in body
    assert "  - 1 agent stopped polling: app01.orders.example.com" in body
    assert "https://backup.example.com/alerts/?application=orders" in body
    # Nothing about Payroll, nor about shared infrastructure, nor the critical alert (mailed at once).
    assert "Payroll" not in body
    assert "pay01" not in body
    assert "primary" not in body
    assert "Restore test failed" not in body


def test_team_digest_holds_everything_shared_infrastructure_last(backup_admin, day_of_alerts):
    tasks.send_digests()
    body = mail.outbox[0].body

    assert "6 new alerts since the last digest, in 2 applications; 5 still open, 1 cleared since." in body
    assert body.index("Orders\n") < body.index("Payroll\n") < body.index("Shared infrastructure\n")
    assert "  - 1 storage target is nearly full: primary" in body
    assert "  - 1 agent stopped polling: pay01.payroll.example.com" in body


def test_digest_marks_alerts_and_leaves_critical_ones_alone(day_of_alerts):
    tasks.send_digests()
    assert not Alert.objects.filter(digested_at__isnull=True).exclude(pk=day_of_alerts.pk).exists()
    day_of_alerts.refresh_from_db()
    assert day_of_alerts.digested_at is None


def test_next_days_digest_has_only_the_new_alerts(
    owner, other_owner, backup_admin, day_of_alerts, payroll_client
):
    tasks.send_digests()
    mail.outbox.clear()
    warn(payroll_client, kind=AlertKind.RESTORE_TEST_OVERDUE)

    assert tasks.send_digests() == 2
    assert [recipients(m) for m in mail.outbox] == [{TEAM_ADDRESS, backup_admin.email}, {other_owner.email}]
    assert "1 client is overdue for a restore test: payroll-db" in mail.outbox[1].body


def test_many_alerts_still_make_one_mail_and_long_lists_are_cut(owner, app):
    clients = [factories.BackupClientFactory(application=app, name=f"client-{n:02d}") for n in range(12)]
    for client in clients:
        warn(client)
    tasks.send_digests()

    owner_mails = [m for m in mail.outbox if owner.email in m.to]
    assert len(owner_mails) == 1
    assert (
        "12 clients are overdue for a restore test: client-00, client-01, client-02, client-03, client-04 "
        "and 7 more" in owner_mails[0].body
    )


def test_nobody_is_mailed_when_nothing_happened(owner, app, backup_admin):
    assert tasks.send_digests() == 0
    assert mail.outbox == []


def test_digest_not_sent_is_sent_next_time(owner, backup_admin, day_of_alerts, settings):
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailServer"
    with pytest.raises(RuntimeError):
        tasks.send_digests()
    assert Alert.objects.filter(digested_at__isnull=False).count() == 0

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert tasks.send_digests() == 3


def test_one_refused_digest_does_not_resend_the_others(
    owner, other_owner, backup_admin, day_of_alerts, settings
):
    settings.EMAIL_BACKEND = f"{__name__}.MailboxRefusingPayroll"
    assert tasks.send_digests() == 2  # the refusal is logged; the others were told
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert tasks.send_digests() == 0


def test_recipients_are_the_team_mailbox_and_its_active_members(backup_admin, backup_team_group, settings):
    gone = factories.UserFactory(username="gone", is_active=False)
    gone.groups.add(backup_team_group)
    assert notify.backup_team_addresses() == sorted([TEAM_ADDRESS, backup_admin.email])
    settings.PORTAL_BACKUP_TEAM_EMAIL = ""
    assert notify.backup_team_addresses() == [backup_admin.email]
