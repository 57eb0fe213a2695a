"""What owners see of backup levels: each point's level, the policy's scheme, broken chains, and
that database dumps stay full — on the client page, the protect form and the request page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.choices import Plugin, Verification
from catalog.models import Backup
from tests import factories
from tests.requests.factories import submit_client

pytestmark = pytest.mark.django_db

DUMPS_FULL = "Database dumps (PostgreSQL, MySQL) are always full backups."


def client_page(browser, client, **params) -> str:
    response = browser.get(reverse("catalog:client", args=[client.pk]), params)
    assert response.status_code == 200
    return response.content.decode()


def table_rows(page: str) -> list[str]:
    """The recovery points table's body rows, as HTML."""
    body = page.split("<tbody", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr.*?</tr>", body, flags=re.S)


@pytest.fixture
def weekly(db):
    return factories.ProtectionPolicyFactory(name="Weekly fulls", full_every_days=7)


@pytest.fixture
def chain(app, weekly):
    """``owner``'s files client on the weekly policy: a full and two incrementals, newest an hour old."""
    agent = factories.AgentFactory(applications=[app])
    client = factories.BackupClientFactory(application=app, agent=agent, policy=weekly, name="web-files")
    return factories.build_chain(client, 3, start=timezone.now() - timedelta(days=2, hours=1))


def test_client_page_shows_each_points_level_and_its_base(owner_client, chain):
    full, first, second = chain

    rows = table_rows(client_page(owner_client, full.client))

    assert len(rows) == 3  # newest first
    assert f"#{second.pk}" in rows[0] and f"on #{first.pk}" in rows[0] and "Incremental" in rows[0]
    assert f"#{first.pk}" in rows[1] and f"on #{full.pk}" in rows[1]
    assert f"#{full.pk}" in rows[2] and ">Full<" in rows[2] and " on #" not in rows[2]
    assert all("Restore…" in row for row in rows)


def test_client_page_describes_the_policys_levels(owner_client, chain):
    page = client_page(owner_client, chain[0].client)

    assert "Backup levels" in page
    assert "A full backup every 7 days; incremental backups (what changed) in between." in page


def test_a_database_client_on_an_incremental_policy_says_its_dumps_are_full(owner_client, app, weekly):
    database = factories.BackupClientFactory(
        application=app, policy=weekly, plugin=Plugin.POSTGRESQL, options={"database": "orders"}
    )

    page = client_page(owner_client, database)

    assert DUMPS_FULL in page
    assert "every 7 days" not in page.split("Backup levels", 1)[1].split("</dd>", 1)[0]


def test_a_client_on_a_fulls_only_policy_says_so(owner_client, mine):
    page = client_page(owner_client, mine.client)

    assert "Every backup is a full backup." in page
    assert DUMPS_FULL not in page


def test_a_broken_chain_offers_no_restore_and_says_why(owner_client, chain):
    full, first, second = chain
    Backup.objects.filter(pk=full.pk).update(verification=Verification.FAILED)

    rows = table_rows(client_page(owner_client, full.client))

    # The incrementals cannot be restored without their full: no button, a reason instead.
    assert "chain broken" in rows[0] and "Restore…" not in rows[0]
    assert "chain broken" in rows[1] and "Restore…" not in rows[1]
    # The full failed its own test: shown as failed, its link kept (the form explains, as ever).
    assert "chain broken" not in rows[2] and "Failed" in rows[2]


def test_the_points_filter_by_level(owner_client, chain):
    full, first, second = chain

    incrementals = table_rows(client_page(owner_client, full.client, level="incremental"))
    fulls = table_rows(client_page(owner_client, full.client, level="full"))

    assert [f"#{second.pk}" in incrementals[0], f"#{first.pk}" in incrementals[1]] == [True, True]
    assert len(incrementals) == 2
    assert len(fulls) == 1 and f"#{full.pk}" in fulls[0]


def test_another_applications_chain_is_404(owner_client, other_app):
    agent = factories.AgentFactory(applications=[other_app])
    theirs = factories.BackupClientFactory(application=other_app, agent=agent)
    points = factories.build_chain(theirs, 2)

    assert owner_client.get(reverse("catalog:client", args=[theirs.pk])).status_code == 404
    browse = reverse("catalog:browse", args=[theirs.pk, points[-1].pk])
    assert owner_client.get(browse).status_code == 404
    assert owner_client.get(reverse("requests:restore", args=[points[-1].pk])).status_code == 404


def test_client_page_costs_the_same_queries_with_long_chains(owner_client, chain):
    client = chain[0].client
    url = reverse("catalog:client", args=[client.pk])
    with CaptureQueriesContext(connection) as few:
        owner_client.get(url)
    factories.build_chain(client, 30, start=timezone.now() - timedelta(days=40))
    Backup.objects.filter(pk=chain[0].pk).update(verification=Verification.FAILED)
    with CaptureQueriesContext(connection) as many:
        owner_client.get(url)

    # session, user, backup-team check, the annotated client, one page of backups, recent jobs
    assert len(many) == len(few) == 6


# --- Choosing and reading a policy ----------------------------------------------------------------


def test_protect_form_shows_each_policys_levels_and_that_dumps_are_full(owner_client, app, weekly):
    factories.ProtectionPolicyFactory(name="Every fifth", full_every_backups=5)
    factories.ProtectionPolicyFactory(name="Plain")

    page = owner_client.get(reverse("requests:protect", args=[app.slug])).content.decode()

    assert ">full every 7 days<" in page
    assert ">full every 5 backups<" in page
    assert ">fulls only<" in page
    assert "an incremental backup stores only the files that changed" in page
    assert DUMPS_FULL in page


def test_protect_form_without_incremental_policies_says_nothing_of_levels(owner_client, app, auto_policy):
    page = owner_client.get(reverse("requests:protect", args=[app.slug])).content.decode()

    assert "fulls only" in page
    assert DUMPS_FULL not in page


def test_policy_choices_name_their_levels(owner, app, weekly):
    from requests_app.forms import ClientRequestForm

    form = ClientRequestForm(application=app, user=owner)

    assert any("full every 7 days" in label for _, label in form.fields["policy"].choices)
    assert form.incremental_policies


def test_a_database_request_on_an_incremental_policy_says_dumps_are_full(owner_client, owner, app, weekly):
    database = submit_client(
        owner, application=app, policy=weekly, plugin=Plugin.MYSQL, options={"database": "shop"}
    )
    files = submit_client(owner, application=app, policy=weekly)

    database_page = owner_client.get(reverse("requests:client-request", args=[database.pk])).content.decode()
    files_page = owner_client.get(reverse("requests:client-request", args=[files.pk])).content.decode()

    assert "full every 7 days" in database_page and DUMPS_FULL in database_page
    assert "full every 7 days" in files_page and DUMPS_FULL not in files_page


def test_the_restore_form_says_an_incremental_is_restored_with_its_chain(owner_client, chain):
    full, first, second = chain

    page = owner_client.get(reverse("requests:restore", args=[second.pk])).content.decode()
    full_page = owner_client.get(reverse("requests:restore", args=[full.pk])).content.decode()

    assert f"on #{first.pk}: restored with its chain, back to the last full" in page
    assert "<dt>Level</dt><dd>Full</dd>" in full_page
