"""List pages cost the same number of queries however many rows there are."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from catalog.choices import JobState
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from tests import factories
from tests.factories import build_estate


def queries(browser, url: str, **params) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = browser.get(url, params)
    assert response.status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def grow_estate(owner, count: int) -> None:
    """``count`` applications, each with two clients, backups, a failure and open requests."""
    policy = factories.ProtectionPolicyFactory()
    for _ in range(count):
        app = factories.ApplicationFactory(owners=[owner])
        estate = build_estate(app)
        second = factories.BackupClientFactory(application=app, agent=estate.agent, policy=policy)
        factories.BackupFactory(client=second)
        factories.JobFactory(client=second, state=JobState.FAILED)
        services.submit_restore(
            actor=Actor.person(owner, Channel.WEB),
            backup=estate.backup,
            target_agent=estate.agent,
            target_location="/srv/restore/x",
            overwrite=True,
        )


@pytest.mark.django_db
def test_dashboard_query_count_is_constant(owner_client, owner):
    grow_estate(owner, 2)
    few = queries(owner_client, reverse("home"))
    grow_estate(owner, 4)
    many = queries(owner_client, reverse("home"))
    assert len(owner_client.get(reverse("home")).context["applications"]) == 6
    assert len(many) == len(few)
    # session, user, backup-team check, the annotated applications, open alerts, my open requests of each kind
    assert len(few) == 7, few


@pytest.mark.django_db
def test_client_page_query_count_is_constant_and_never_counts(owner_client, app):
    estate = build_estate(app)
    url = reverse("catalog:client", args=[estate.client.pk])
    few = queries(owner_client, url)
    for _ in range(40):
        factories.BackupFactory(client=estate.client)
        factories.JobFactory(client=estate.client, state=JobState.FAILED)
    many = queries(owner_client, url)
    # session, user, backup-team check, the annotated client, one page of backups, recent jobs
    assert len(many) == len(few) == 6, many
    assert not [
        sql for sql in many if "COUNT(*)" in sql.upper() and 'catalog_backup"' in sql and "_count" not in sql
    ]


@pytest.mark.django_db
def test_application_page_query_count_is_constant(owner_client, app):
    estate = build_estate(app)
    url = reverse("catalog:application", args=[app.slug])
    few = queries(owner_client, url)
    for _ in range(5):
        client = factories.BackupClientFactory(
            application=app, agent=factories.AgentFactory(applications=[app])
        )
        factories.BackupFactory(client=client)
    assert estate
    # session, user, backup-team check, the annotated application, its clients, its agents
    assert len(queries(owner_client, url)) == len(few) == 6


@pytest.mark.django_db
def test_request_list_query_count_is_constant(owner_client, owner):
    grow_estate(owner, 1)
    few = queries(owner_client, reverse("requests:list"))
    grow_estate(owner, 5)
    # session, user, team check, count, one page of (kind, id), the page's rows of one kind each
    assert len(queries(owner_client, reverse("requests:list"))) == len(few)
