"""Every page renders for its owner, behind a login, with static files from this server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import reverse

from catalog.choices import BackupStatus, ClientStatus, JobState, Plugin
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from tests import factories


@pytest.fixture
def restore_request(owner, mine):
    return services.submit_restore(
        actor=Actor.person(owner, Channel.WEB),
        backup=mine.backup,
        target_agent=mine.agent,
        target_location="/srv/restore/one",
    )


@pytest.fixture
def client_request(owner, app, manual_policy):
    return services.submit_client(
        actor=Actor.person(owner, Channel.WEB),
        application=app,
        hostname="new01.example.com",
        name="new-db",
        plugin=Plugin.POSTGRESQL,
        options={"database": "orders"},
        policy=manual_policy,
    )


def owner_pages(app, mine, restore_request, client_request) -> list[str]:
    return [
        reverse("home"),
        reverse("catalog:application", args=[app.slug]),
        reverse("catalog:client", args=[mine.client.pk]),
        reverse("requests:restore", args=[mine.backup.pk]),
        reverse("requests:protect", args=[app.slug]),
        reverse("requests:list"),
        reverse("requests:client-request", args=[client_request.pk]),
        reverse("requests:restore-request", args=[restore_request.pk]),
    ]


@pytest.mark.django_db
def test_every_page_renders_for_its_owner(owner_client, app, mine, restore_request, client_request):
    for url in owner_pages(app, mine, restore_request, client_request):
        response = owner_client.get(url)
        assert response.status_code == 200, url
        assert b"portal/portal.css" in response.content


@pytest.mark.django_db
def test_backup_team_sees_every_application_page(
    client, backup_admin, app, mine, restore_request, client_request
):
    client.force_login(backup_admin)
    for url in owner_pages(app, mine, restore_request, client_request):
        assert client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_pages_need_a_login(client, app, mine):
    for url in [reverse("home"), reverse("catalog:client", args=[mine.client.pk]), reverse("requests:list")]:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login") + "?next=")


@pytest.mark.django_db
def test_login_page_renders_our_template(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Sign in" in response.content
    assert b"csrfmiddlewaretoken" in response.content


@pytest.mark.django_db
def test_logout_is_a_post(owner_client):
    assert owner_client.get(reverse("logout")).status_code == 405
    response = owner_client.post(reverse("logout"))
    assert response.status_code == 302
    assert owner_client.get(reverse("home")).status_code == 302


@pytest.mark.django_db
def test_admin_link_only_for_the_backup_team(client, owner, backup_admin, app):
    admin_href = f'href="{reverse("admin:index")}"'.encode()
    client.force_login(owner)
    assert admin_href not in client.get(reverse("home")).content
    client.force_login(backup_admin)
    assert admin_href in client.get(reverse("home")).content


@pytest.mark.django_db
def test_dashboard_shows_protection_at_a_glance(owner_client, app, other_app, mine, theirs):
    stale = factories.BackupClientFactory(application=app, name="stale", policy__rpo_hours=1)
    factories.BackupFactory(client=stale, taken_at=mine.backup.taken_at.replace(year=2020))
    factories.JobFactory(client=mine.client, state=JobState.FAILED)
    page = owner_client.get(reverse("home")).content.decode()
    assert app.name in page
    assert other_app.name not in page
    assert "RPO missed on 1 of 2 clients" in page


@pytest.mark.django_db
def test_application_page_lists_clients_and_agents(owner_client, app, mine):
    page = owner_client.get(reverse("catalog:application", args=[app.slug])).content.decode()
    assert mine.client.name in page
    assert mine.agent.hostname in page
    assert reverse("catalog:client", args=[mine.client.pk]) in page
    assert "RPO met" in page


@pytest.mark.django_db
def test_pending_clients_are_not_held_to_their_rpo(owner_client, app, mine):
    factories.BackupClientFactory(application=app, agent=None, status=ClientStatus.PENDING_ENROLMENT)
    page = owner_client.get(reverse("catalog:application", args=[app.slug])).content.decode()
    assert "Not measured (pending enrolment)" in page
    assert "RPO missed" not in page
    assert "RPO met" in owner_client.get(reverse("home")).content.decode()


@pytest.mark.django_db
def test_client_page_links_available_backups_to_the_restore_form(owner_client, mine):
    expired = factories.BackupFactory(client=mine.client, status=BackupStatus.EXPIRED)
    page = owner_client.get(reverse("catalog:client", args=[mine.client.pk])).content.decode()
    assert reverse("requests:restore", args=[mine.backup.pk]) in page
    assert reverse("requests:restore", args=[expired.pk]) not in page


@pytest.mark.django_db
def test_client_page_filters_by_status_and_date(owner_client, mine):
    expired = factories.BackupFactory(client=mine.client, status=BackupStatus.EXPIRED)
    url = reverse("catalog:client", args=[mine.client.pk])
    table = owner_client.get(url, {"status": BackupStatus.EXPIRED}).context["table"]
    assert [row.record.pk for row in table.paginated_rows] == [expired.pk]
    table = owner_client.get(url, {"taken_at_after": "2000-01-01", "taken_at_before": "2000-01-02"}).context[
        "table"
    ]
    assert list(table.paginated_rows) == []


@pytest.mark.django_db
def test_client_page_paginates_by_25_without_counting(owner_client, mine):
    for _ in range(30):
        factories.BackupFactory(client=mine.client)
    url = reverse("catalog:client", args=[mine.client.pk])
    first = owner_client.get(url).context["table"]
    assert len(first.page.object_list) == 25
    assert first.page.has_next()
    second = owner_client.get(url, {"page": 2}).context["table"]
    assert len(second.page.object_list) == 6
    assert not second.page.has_next()


@pytest.mark.django_db
def test_client_page_sorts(owner_client, mine):
    big = factories.BackupFactory(client=mine.client, size_bytes=10 * 1024**4)
    url = reverse("catalog:client", args=[mine.client.pk])
    table = owner_client.get(url, {"sort": "-size_bytes"}).context["table"]
    assert table.page.object_list[0].record.pk == big.pk


@pytest.mark.django_db
def test_assets_are_local_files_without_external_references(owner_client, app):
    page = owner_client.get(reverse("home")).content.decode()
    assert f'href="{settings.STATIC_URL}portal/portal.css"' in page
    assert f'src="{settings.STATIC_URL}portal/portal.js"' in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for name in ("portal/portal.css", "portal/portal.js"):
        text = Path(finders.find(name)).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "@import" not in text, name
