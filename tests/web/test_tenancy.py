"""Another owner's objects are a 404 on every page, form and JSON endpoint — reached by URL tampering."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.choices import Plugin
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.models import ClientRequest, RestoreRequest


@pytest.fixture
def their_requests(other_owner, other_app, theirs, manual_policy):
    actor = Actor.person(other_owner, Channel.WEB)
    restore = services.submit_restore(
        actor=actor, backup=theirs.backup, target_agent=theirs.agent, target_location="/srv/restore/x"
    )
    client_request = services.submit_client(
        actor=actor,
        application=other_app,
        hostname="hr02.example.com",
        name="hr-files",
        plugin=Plugin.FILES,
        options={"paths": ["/srv/hr"]},
        policy=manual_policy,
    )
    return restore, client_request


@pytest.mark.django_db
def test_other_tenants_pages_are_404(owner_client, mine, other_app, theirs, their_requests):
    restore, client_request = their_requests
    urls = [
        reverse("catalog:application", args=[other_app.slug]),
        reverse("catalog:client", args=[theirs.client.pk]),
        reverse("requests:restore", args=[theirs.backup.pk]),
        reverse("requests:restore-decision", args=[theirs.backup.pk]) + f"?target_agent={theirs.agent.pk}",
        reverse("requests:protect", args=[other_app.slug]),
        reverse("requests:client-request", args=[client_request.pk]),
        reverse("requests:restore-request", args=[restore.pk]),
        reverse("requests:restore-progress", args=[restore.pk]),
    ]
    for url in urls:
        assert owner_client.get(url).status_code == 404, url


@pytest.mark.django_db
def test_restoring_another_tenants_backup_is_404_and_creates_nothing(owner_client, mine, theirs):
    response = owner_client.post(
        reverse("requests:restore", args=[theirs.backup.pk]),
        {"target_agent": mine.agent.pk, "target_location": "/srv/restore/stolen"},
    )
    assert response.status_code == 404
    assert not RestoreRequest.objects.exists()


@pytest.mark.django_db
def test_protecting_a_server_for_another_application_is_404(owner_client, other_app, auto_policy):
    response = owner_client.post(
        reverse("requests:protect", args=[other_app.slug]),
        {
            "hostname": "x.example.com",
            "name": "x",
            "plugin": Plugin.FILES,
            "paths": "/srv",
            "policy": auto_policy.pk,
        },
    )
    assert response.status_code == 404
    assert not ClientRequest.objects.exists()


@pytest.mark.django_db
def test_decision_endpoint_refuses_another_tenants_agent(owner_client, mine, theirs):
    url = reverse("requests:restore-decision", args=[mine.backup.pk])
    assert owner_client.get(url, {"target_agent": theirs.agent.pk}).status_code == 404
    assert owner_client.get(url, {"target_agent": "nope"}).status_code == 400


@pytest.mark.django_db
def test_owner_cannot_cancel_another_tenants_request(owner_client, their_requests):
    restore, client_request = their_requests
    for kind, obj in (("restore", restore), ("client", client_request)):
        response = owner_client.post(reverse("requests:cancel", args=[kind, obj.pk]))
        assert response.status_code == 404
        obj.refresh_from_db()
        assert obj.status != RequestStatus.CANCELLED


@pytest.mark.django_db
def test_request_list_shows_only_my_applications(owner_client, mine, their_requests):
    page = owner_client.get(reverse("requests:list"))
    assert page.status_code == 200
    assert list(page.context["page"].object_list) == []


@pytest.mark.django_db
def test_unknown_request_kind_is_404(owner_client):
    assert owner_client.post(reverse("requests:cancel", args=["job", 1])).status_code == 404
