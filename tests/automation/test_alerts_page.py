"""The portal's alerts page: what each person may see, open first, and acknowledging with who and when."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.choices import AlertKind, AlertSeverity
from catalog.models import Alert
from catalog.views import ALERTS_PER_PAGE
from tests import factories

pytestmark = pytest.mark.django_db

URL = "/alerts/"


def ack_url(alert) -> str:
    return reverse("alert-acknowledge", args=[alert.pk])


@pytest.fixture
def mine(orders_clients):
    return factories.AlertFactory(client=orders_clients[0], message="Backup of orders/db01-pg failed")


@pytest.fixture
def theirs(payroll_client):
    return factories.AlertFactory(client=payroll_client, message="Backup of payroll/payroll-db failed")


@pytest.fixture
def shared(db):
    target = factories.StorageTargetFactory(name="primary")
    return factories.AlertFactory(
        kind=AlertKind.STORAGE_NEARLY_FULL,
        client=None,
        application=None,
        storage_target=target,
        message="Storage target primary is 91% full.",
    )


def listed(response) -> list[Alert]:
    assert response.status_code == 200
    return list(response.context["page"].object_list)


def test_owner_sees_only_the_alerts_of_their_applications(owner_client, mine, theirs, shared):
    assert listed(owner_client.get(URL)) == [mine]


def test_backup_team_sees_every_alert(client, backup_admin, mine, theirs, shared):
    client.force_login(backup_admin)
    assert set(listed(client.get(URL))) == {mine, theirs, shared}


def test_open_alerts_come_first_then_newest_first(owner_client, orders_clients):
    now = timezone.now()
    old_open = factories.AlertFactory(client=orders_clients[0], created_at=now - timedelta(days=3))
    new_cleared = factories.AlertFactory(
        client=orders_clients[1], created_at=now - timedelta(hours=1), resolved_at=now
    )
    new_open = factories.AlertFactory(client=orders_clients[2], created_at=now - timedelta(hours=2))
    old_cleared = factories.AlertFactory(
        client=orders_clients[0], created_at=now - timedelta(days=5), resolved_at=now - timedelta(days=4)
    )
    assert listed(owner_client.get(URL)) == [new_open, old_open, new_cleared, old_cleared]


def test_filters_open_unacknowledged_and_application(client, backup_admin, mine, theirs, orders_clients):
    cleared = factories.AlertFactory(client=orders_clients[1], resolved_at=timezone.now())
    acked = factories.AlertFactory(
        client=orders_clients[2], acknowledged_at=timezone.now(), acknowledged_by=backup_admin
    )
    client.force_login(backup_admin)
    assert set(listed(client.get(URL, {"show": "open"}))) == {mine, theirs, acked}
    assert set(listed(client.get(URL, {"show": "unacknowledged"}))) == {mine, theirs}
    assert set(listed(client.get(URL, {"application": "orders"}))) == {mine, cleared, acked}
    assert set(listed(client.get(URL, {"show": "nonsense"}))) == {mine, theirs, cleared, acked}


def test_page_shows_what_and_where_with_an_acknowledge_button(owner_client, mine):
    page = owner_client.get(URL).content.decode()
    assert "Backup of orders/db01-pg failed" in page
    assert f'action="{ack_url(mine)}"' in page
    assert "csrfmiddlewaretoken" in page


def test_alerts_are_paginated(owner_client, orders_clients):
    for _ in range(ALERTS_PER_PAGE + 5):
        factories.AlertFactory(client=orders_clients[0])
    assert len(listed(owner_client.get(URL))) == ALERTS_PER_PAGE
    assert len(listed(owner_client.get(URL, {"page": 2}))) == 5


def test_alerts_page_needs_a_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_acknowledging_records_who_and_when(owner_client, owner, mine):
    before = timezone.now()
    response = owner_client.post(ack_url(mine), {"next": "/alerts/?show=open"})
    assert response.status_code == 302
    assert response["Location"] == "/alerts/?show=open"
    mine.refresh_from_db()
    assert mine.acknowledged_by == owner
    assert before <= mine.acknowledged_at <= timezone.now()
    assert mine.resolved_at is None  # acknowledged is not resolved: the watch closes it when it clears


def test_acknowledging_keeps_the_first_who_acknowledged(owner_client, owner, backup_admin, mine):
    first = timezone.now() - timedelta(hours=1)
    Alert.objects.filter(pk=mine.pk).update(acknowledged_at=first, acknowledged_by=backup_admin)
    response = owner_client.post(ack_url(mine), follow=True)
    assert "backup_admin had already acknowledged this alert" in response.content.decode()
    mine.refresh_from_db()
    assert (mine.acknowledged_by, mine.acknowledged_at) == (backup_admin, first)


def test_another_tenants_alert_is_404(owner_client, theirs, shared):
    assert owner_client.post(ack_url(theirs)).status_code == 404
    assert owner_client.post(ack_url(shared)).status_code == 404
    assert not Alert.objects.filter(acknowledged_at__isnull=False).exists()


def test_acknowledge_redirect_stays_on_this_site(owner_client, mine):
    response = owner_client.post(ack_url(mine), {"next": "https://evil.example.com/"})
    assert response["Location"] == URL


def test_acknowledge_is_post_only(owner_client, mine):
    assert owner_client.get(ack_url(mine)).status_code == 405


def test_acknowledge_enforces_csrf(owner, mine):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    assert browser.post(ack_url(mine)).status_code == 403
    mine.refresh_from_db()
    assert mine.acknowledged_at is None

    browser.get(URL)  # the page sets the CSRF cookie its form posts back
    token = browser.cookies["csrftoken"].value
    assert browser.post(ack_url(mine), {"csrfmiddlewaretoken": token}).status_code == 302
    mine.refresh_from_db()
    assert mine.acknowledged_by == owner


def test_nav_links_to_the_alerts_page(owner_client):
    assert f'href="{URL}"' in owner_client.get(reverse("home")).content.decode()


def queries(browser, url: str, **params) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = browser.get(url, params)
    assert response.status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def grow_alerts(app, count: int, acknowledger) -> None:
    """Alerts about clients, agents and storage, some acknowledged, so an N+1 on any relation shows."""
    for _ in range(count):
        client = factories.BackupClientFactory(application=app)
        factories.AlertFactory(client=client, severity=AlertSeverity.CRITICAL)
        factories.AlertFactory(
            kind=AlertKind.AGENT_SILENT,
            client=None,
            application=app,
            agent=client.agent,
            acknowledged_at=timezone.now(),
            acknowledged_by=acknowledger,
        )
        factories.AlertFactory(
            kind=AlertKind.STORAGE_NEARLY_FULL,
            client=None,
            application=None,
            storage_target=factories.StorageTargetFactory(),
            resolved_at=timezone.now(),
        )


def test_alerts_page_query_count_is_constant(client, backup_admin, app):
    client.force_login(backup_admin)
    grow_alerts(app, 2, backup_admin)
    few = queries(client, URL)
    grow_alerts(app, 8, backup_admin)
    many = queries(client, URL)
    assert len(listed(client.get(URL))) == ALERTS_PER_PAGE
    # session, user, backup-team check, the count, one page of alerts with their relations
    assert len(many) == len(few) == 5, many
