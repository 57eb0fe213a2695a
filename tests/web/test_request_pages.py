"""Request pages: details, timeline, cancel, the enrolment token for the requester only, live progress."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.choices import JobState, Plugin
from catalog.models import Job
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from tests import factories


def restore_for(user, estate, **kwargs):
    return services.submit_restore(
        actor=Actor.person(user, Channel.WEB),
        backup=estate.backup,
        target_agent=estate.agent,
        target_location=kwargs.pop("target_location", "/srv/restore/one"),
        **kwargs,
    )


def client_request_for(user, app, policy, name="new-files"):
    return services.submit_client(
        actor=Actor.person(user, Channel.WEB),
        application=app,
        hostname="new01.example.com",
        name=name,
        plugin=Plugin.FILES,
        options={"paths": ["/srv/new"]},
        policy=policy,
    )


@pytest.fixture
def co_owner(app):
    user = factories.UserFactory(username="co_owner")
    app.owners.add(user)
    return user


@pytest.mark.django_db
def test_request_page_shows_rule_decision_and_timeline(owner_client, owner, mine):
    restore = restore_for(owner, mine)
    page = owner_client.get(restore.get_absolute_url()).content.decode()
    assert "A restore to a new location on your own server is approved automatically." in page
    assert "by the system" in page
    assert "owner" in page and "Web portal" in page  # the timeline: who, through which channel
    assert "Submitted" in page and "Approved" in page


@pytest.mark.django_db
def test_requester_cancels_a_queued_restore(owner_client, owner, mine):
    restore = restore_for(owner, mine)
    response = owner_client.post(reverse("requests:cancel", args=["restore", restore.pk]), follow=True)
    restore.refresh_from_db()
    assert restore.status == RequestStatus.CANCELLED
    assert Job.objects.get(pk=restore.job_id).state == JobState.CANCELLED
    assert "is cancelled" in response.content.decode()
    assert restore.events.last().action == "cancelled"


@pytest.mark.django_db
def test_co_owner_sees_but_cannot_cancel(client, owner, co_owner, mine):
    restore = restore_for(owner, mine, overwrite=True)
    client.force_login(co_owner)
    page = client.get(restore.get_absolute_url())
    assert page.status_code == 200
    assert page.context["can_cancel"] is False
    response = client.post(reverse("requests:cancel", args=["restore", restore.pk]), follow=True)
    assert "Only the person who asked" in response.content.decode()
    restore.refresh_from_db()
    assert restore.status == RequestStatus.SUBMITTED


@pytest.mark.django_db
def test_cancel_needs_a_post(owner_client, owner, mine):
    restore = restore_for(owner, mine)
    assert owner_client.get(reverse("requests:cancel", args=["restore", restore.pk])).status_code == 405


@pytest.mark.django_db
def test_running_restore_cannot_be_cancelled(owner_client, owner, mine):
    restore = restore_for(owner, mine)
    Job.objects.filter(pk=restore.job_id).update(
        state=JobState.RUNNING, lease_expires_at=timezone.now() + timedelta(minutes=2)
    )
    response = owner_client.post(reverse("requests:cancel", args=["restore", restore.pk]), follow=True)
    assert "already started" in response.content.decode()
    restore.refresh_from_db()
    assert restore.status == RequestStatus.APPROVED


@pytest.mark.django_db
def test_the_requester_gets_the_enrol_command_once_with_its_allow_list(
    client, owner, co_owner, app, auto_policy
):
    request = client_request_for(owner, app, auto_policy)
    assert request.status == RequestStatus.APPROVED
    client.force_login(owner)
    page = client.get(request.get_absolute_url()).content.decode()
    assert "Show the enrol command" in page and "--token" not in page

    response = client.post(reverse("requests:issue-enrolment", args=[request.pk]))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    request.refresh_from_db()
    command = response.context["enrol_command"]
    assert command.startswith("backup-agent enrol --server http://127.0.0.1:8000 --token bpe_")
    assert "--hostname new01.example.com" in command
    assert command in html.unescape(response.content.decode())
    token = command.split("--token ")[1].split()[0]
    # Shown this once: the page, reloaded, no longer holds it; the database holds only its hash.
    assert token not in client.get(request.get_absolute_url()).content.decode()
    assert request.enrolment.token_hash != token

    client.force_login(co_owner)
    assert "Show the enrol command" not in client.get(request.get_absolute_url()).content.decode()
    refused = client.post(reverse("requests:issue-enrolment", args=[request.pk]), follow=True)
    assert "Only the person who asked" in refused.content.decode()


@pytest.mark.django_db
def test_no_enrol_command_once_cancelled(owner_client, owner, app, auto_policy):
    request = client_request_for(owner, app, auto_policy)
    owner_client.post(reverse("requests:cancel", args=["client", request.pk]))
    page = owner_client.get(request.get_absolute_url()).content.decode()
    assert "Show the enrol command" not in page
    response = owner_client.post(reverse("requests:issue-enrolment", args=[request.pk]), follow=True)
    assert "cannot be enrolled" in response.content.decode()


@pytest.mark.django_db
def test_backup_team_gets_an_approve_in_admin_link_on_pending_requests(
    client, owner, backup_admin, app, manual_policy
):
    request = client_request_for(owner, app, manual_policy)
    client.force_login(backup_admin)
    assert "Approve in admin" in client.get(request.get_absolute_url()).content.decode()
    client.force_login(owner)
    assert "Approve in admin" not in client.get(request.get_absolute_url()).content.decode()


@pytest.mark.django_db
def test_progress_json_returns_bytes(owner_client, owner, mine):
    restore = restore_for(owner, mine)
    Job.objects.filter(pk=restore.job_id).update(bytes_done=256 * 1024**2, bytes_total=1024**3)
    response = owner_client.get(reverse("requests:restore-progress", args=[restore.pk]))
    assert response["Cache-Control"].startswith("max-age=0")
    data = response.json()
    assert data["bytes_done"] == 256 * 1024**2
    assert data["bytes_total"] == 1024**3
    assert data["percent"] == 25
    assert data["bytes_done_human"] == "256.0 MiB"
    assert data["job_state"] == JobState.QUEUED
    assert data["status"] == RequestStatus.APPROVED
    assert data["terminal"] is False


@pytest.mark.django_db
def test_progress_of_a_request_waiting_for_approval(owner_client, owner, mine):
    restore = restore_for(owner, mine, overwrite=True)
    data = owner_client.get(reverse("requests:restore-progress", args=[restore.pk])).json()
    assert data["job_state"] is None
    assert data["bytes_done"] == 0
    assert data["bytes_total"] == mine.backup.size_bytes


@pytest.mark.django_db
def test_restore_page_polls_until_the_request_is_finished(owner_client, owner, mine):
    restore = restore_for(owner, mine)
    url = reverse("requests:restore-progress", args=[restore.pk])
    assert f'data-progress-url="{url}"' in owner_client.get(restore.get_absolute_url()).content.decode()
    services.cancel(type(restore), restore.pk, actor=Actor.person(owner))
    assert "data-progress-url" not in owner_client.get(restore.get_absolute_url()).content.decode()
    assert owner_client.get(url).json()["terminal"] is True


@pytest.mark.django_db
def test_request_list_filters_by_status_and_kind(owner_client, owner, app, mine, manual_policy):
    restore = restore_for(owner, mine)
    client_request = client_request_for(owner, app, manual_policy)
    url = reverse("requests:list")

    def listed(**params):
        return [(r.kind, r.pk) for r in owner_client.get(url, params).context["page"].object_list]

    assert listed() == [("client", client_request.pk), ("restore", restore.pk)]
    assert listed(status=RequestStatus.SUBMITTED) == [("client", client_request.pk)]
    assert listed(kind="restore") == [("restore", restore.pk)]
    assert listed(status="open", application=app.slug) == [
        ("client", client_request.pk),
        ("restore", restore.pk),
    ]
    assert listed(application="elsewhere") == []


@pytest.mark.django_db
def test_request_list_paginates(owner_client, owner, app, mine, manual_policy):
    for n in range(26):
        client_request_for(owner, app, manual_policy, name=f"c{n}")
    url = reverse("requests:list")
    assert len(owner_client.get(url).context["page"].object_list) == 25
    assert len(owner_client.get(url, {"page": 2}).context["page"].object_list) == 1


@pytest.mark.django_db
def test_dashboard_lists_my_open_requests(owner_client, owner, mine):
    restore = restore_for(owner, mine, overwrite=True)
    page = owner_client.get(reverse("home")).content.decode()
    assert restore.get_absolute_url() in page
    assert "waits for the backup team" in page
