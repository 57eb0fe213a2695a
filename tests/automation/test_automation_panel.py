"""The automation panel: on the backup team's dashboard only, and the same numbers in the admin."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.choices import JobState, JobTrigger
from tests import factories

pytestmark = pytest.mark.django_db

HOME = "/"
ADMIN_PAGE = "/admin/automation/"


def finished_jobs(app, count: int, **fields) -> None:
    client = factories.BackupClientFactory(application=app)
    for _ in range(count):
        factories.JobFactory(client=client, state=JobState.SUCCEEDED, finished_at=timezone.now(), **fields)


def test_backup_team_dashboard_has_the_automation_panel(client, backup_admin, app):
    finished_jobs(app, 3)
    finished_jobs(app, 1, trigger=JobTrigger.USER)
    client.force_login(backup_admin)
    response = client.get(HOME)
    page = response.content.decode()
    assert 'id="automation-title"' in page
    assert "Human actions" in page
    assert response.context["automation"].weeks[-1].jobs_run == 4
    assert response.context["automation"].weeks[-1].human_actions == 1


def test_owners_do_not_see_the_automation_panel(client, owner, app):
    client.force_login(owner)
    response = client.get(HOME)
    assert 'id="automation-title"' not in response.content.decode()
    assert "automation" not in response.context


def test_dashboard_counts_open_unacknowledged_alerts(
    client, owner, backup_admin, orders_clients, payroll_client
):
    factories.AlertFactory(client=orders_clients[0])
    factories.AlertFactory(client=orders_clients[1], resolved_at=timezone.now())
    factories.AlertFactory(
        client=orders_clients[2], acknowledged_at=timezone.now(), acknowledged_by=backup_admin
    )
    factories.AlertFactory(client=payroll_client)
    client.force_login(owner)
    response = client.get(HOME)
    assert response.context["summary"]["alerts"] == 1
    assert 'href="/alerts/?show=unacknowledged"' in response.content.decode()


def test_team_dashboard_query_count_is_constant(client, backup_admin, app):
    client.force_login(backup_admin)
    finished_jobs(app, 2)
    with CaptureQueriesContext(connection) as few:
        assert client.get(HOME).status_code == 200
    finished_jobs(app, 30, trigger=JobTrigger.USER)
    factories.AlertFactory(client=factories.BackupClientFactory(application=app))
    with CaptureQueriesContext(connection) as many:
        assert client.get(HOME).status_code == 200
    assert len(few) == len(many)


def test_admin_automation_page_for_the_backup_team(client, backup_admin, app):
    finished_jobs(app, 2)
    client.force_login(backup_admin)
    response = client.get(ADMIN_PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Human actions" in page
    assert "Per 1,000 jobs" in page
    assert response.context["automation"].weeks[-1].jobs_run == 2


def test_admin_index_links_to_the_automation_page(client, backup_admin):
    client.force_login(backup_admin)
    assert f'href="{ADMIN_PAGE}"' in client.get(reverse("admin:index")).content.decode()


def test_admin_automation_page_is_the_backup_teams(client, owner):
    assert client.get(ADMIN_PAGE).status_code == 302  # to the admin's sign-in
    client.force_login(owner)
    assert client.get(ADMIN_PAGE).status_code == 302  # not staff
    owner.is_staff = True
    owner.save()
    assert client.get(ADMIN_PAGE).status_code == 403  # staff, but not on the team
