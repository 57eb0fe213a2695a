"""The restore form: only my agents, the approval rule shown before submitting, the service decides."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from catalog.choices import BackupStatus, JobKind, JobState, Plugin
from catalog.models import Job
from requests_app.choices import Channel, RequestStatus
from requests_app.models import AuditEvent, RestoreRequest
from tests.factories import build_estate

AUTO = "Approved automatically"
NEEDS_TEAM = "Needs the backup team's approval"


def restore_url(backup) -> str:
    return reverse("requests:restore", args=[backup.pk])


@pytest.mark.django_db
def test_form_shows_the_approval_rule_beforehand(owner_client, mine):
    page = owner_client.get(restore_url(mine.backup)).content.decode()
    assert AUTO in page
    assert "A restore to a new location on your own server is approved automatically." in page
    assert reverse("requests:restore-decision", args=[mine.backup.pk]) in page


@pytest.mark.django_db
def test_same_application_new_location_is_approved_and_queued(owner_client, owner, mine):
    response = owner_client.post(
        restore_url(mine.backup),
        {"target_agent": mine.agent.pk, "target_location": "/srv/restore/today", "reason": "Lost a file"},
        follow=True,
    )
    restore = RestoreRequest.objects.get()
    assert response.redirect_chain[-1][0] == restore.get_absolute_url()
    assert "approved automatically" in response.content.decode()
    assert restore.status == RequestStatus.APPROVED
    assert restore.requester == owner
    assert not restore.needs_approval
    job = restore.job
    assert (job.kind, job.state, job.agent, job.target_location) == (
        JobKind.RESTORE,
        JobState.QUEUED,
        mine.agent,
        "/srv/restore/today",
    )
    assert list(restore.events.values_list("channel", flat=True)) == [Channel.WEB, Channel.SYSTEM]


@pytest.mark.django_db
def test_overwrite_needs_approval_and_queues_nothing(owner_client, mine):
    owner_client.post(
        restore_url(mine.backup),
        {"target_agent": mine.agent.pk, "target_location": "/srv/data", "overwrite": "on"},
    )
    restore = RestoreRequest.objects.get()
    assert restore.status == RequestStatus.SUBMITTED
    assert restore.needs_approval and restore.overwrite
    assert restore.job is None
    assert not Job.objects.filter(kind=JobKind.RESTORE).exists()


@pytest.mark.django_db
def test_owner_cannot_target_another_applications_agent(owner_client, mine, theirs):
    response = owner_client.post(
        restore_url(mine.backup), {"target_agent": theirs.agent.pk, "target_location": "/srv/restore/x"}
    )
    assert response.status_code == 200
    assert "target_agent" in response.context["form"].errors
    assert theirs.agent.hostname not in response.content.decode()
    assert not RestoreRequest.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_revoked_agents_are_not_offered(owner_client, app, mine):
    revoked = build_estate(app).agent
    revoked.revoked_at = timezone.now()
    revoked.save()
    form = owner_client.get(restore_url(mine.backup)).context["form"]
    assert list(form.fields["target_agent"].queryset) == [mine.agent]


@pytest.mark.django_db
def test_relative_path_is_a_field_error_and_keeps_the_hint(owner_client, mine):
    response = owner_client.post(
        restore_url(mine.backup),
        {"target_agent": mine.agent.pk, "target_location": "restore/here", "overwrite": "on"},
    )
    assert "is not absolute" in response.context["form"].errors["target_location"][0]
    # The rule for what was typed, rendered by the server after the error.
    assert NEEDS_TEAM in response.content.decode()
    assert not RestoreRequest.objects.exists()


@pytest.mark.django_db
def test_database_clients_ask_for_a_database_name(owner_client, app):
    estate = build_estate(app, plugin=Plugin.POSTGRESQL, options={"database": "orders"})
    response = owner_client.get(restore_url(estate.backup))
    assert response.context["form"].fields["target_location"].label == "Target database"
    response = owner_client.post(
        restore_url(estate.backup), {"target_agent": estate.agent.pk, "target_location": "/not/a/db"}
    )
    assert "name of the database" in response.context["form"].errors["target_location"][0]
    owner_client.post(
        restore_url(estate.backup), {"target_agent": estate.agent.pk, "target_location": "orders_copy"}
    )
    assert RestoreRequest.objects.get().target_location == "orders_copy"


@pytest.mark.django_db
def test_decision_endpoint_follows_agent_and_overwrite(owner_client, mine):
    url = reverse("requests:restore-decision", args=[mine.backup.pk])
    assert owner_client.get(url, {"target_agent": mine.agent.pk}).json()["needs_approval"] is False
    data = owner_client.get(url, {"target_agent": mine.agent.pk, "overwrite": "1"}).json()
    assert data == {
        "needs_approval": True,
        "reason": "Overwriting existing data needs the backup team's approval.",
    }


@pytest.mark.django_db
def test_backup_team_restoring_across_applications_needs_approval(client, backup_admin, mine, theirs):
    client.force_login(backup_admin)
    url = reverse("requests:restore-decision", args=[mine.backup.pk])
    data = client.get(url, {"target_agent": theirs.agent.pk}).json()
    assert data["needs_approval"] is True
    assert "across applications" in data["reason"]


@pytest.mark.django_db
def test_expired_backup_cannot_be_restored(owner_client, mine):
    mine.backup.status = BackupStatus.EXPIRED
    mine.backup.save()
    response = owner_client.post(
        restore_url(mine.backup), {"target_agent": mine.agent.pk, "target_location": "/srv/restore/x"}
    )
    assert response.status_code == 302
    assert response.url == reverse("catalog:client", args=[mine.client.pk])
    assert not RestoreRequest.objects.exists()


@pytest.mark.django_db
def test_post_without_csrf_token_is_refused(owner, mine):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    response = browser.post(
        restore_url(mine.backup), {"target_agent": mine.agent.pk, "target_location": "/srv/restore/x"}
    )
    assert response.status_code == 403
    assert not RestoreRequest.objects.exists()
