"""Backup levels in the public API: a point's level, base and whether it is restorable; the policies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.choices import Verification
from catalog.models import Backup
from tests import factories
from tests.api.contract import BACKUP_FIELDS, POLICY_FIELDS

pytestmark = pytest.mark.django_db


def rows_by_id(response) -> dict[int, dict]:
    assert response.status_code == 200, response.json()
    return {row["id"]: row for row in response.json()["results"]}


@pytest.fixture
def chain(mine):
    """``owner``'s client: a full and three incrementals, one a day, the newest taken an hour ago."""
    start = timezone.now() - timedelta(days=3, hours=1)
    return factories.build_chain(mine.client, 4, start=start)


def test_a_backup_says_its_level_its_base_and_that_it_can_be_restored(owner_api, chain):
    full, first, second, third = chain

    rows = rows_by_id(owner_api.get("/api/v1/backups/", {"client": full.client_id}))

    assert set(rows[third.pk]) == BACKUP_FIELDS
    head = rows[full.pk]
    assert (head["level"], head["base"], head["restorable"]) == ("full", None, True)
    assert [(rows[p.pk]["level"], rows[p.pk]["base"]) for p in (first, second, third)] == [
        ("incremental", full.pk),
        ("incremental", first.pk),
        ("incremental", second.pk),
    ]
    assert all(rows[p.pk]["restorable"] for p in chain)
    detail = owner_api.get(f"/api/v1/backups/{third.pk}/").json()
    assert (detail["level"], detail["base"], detail["restorable"]) == ("incremental", second.pk, True)


def test_a_base_that_failed_verification_makes_the_later_points_unrestorable(owner_api, chain):
    full, first, second, third = chain
    Backup.objects.filter(pk=first.pk).update(verification=Verification.FAILED)

    rows = rows_by_id(owner_api.get("/api/v1/backups/", {"client": full.client_id}))

    assert {pk: row["restorable"] for pk, row in rows.items() if pk in {p.pk for p in chain}} == {
        full.pk: True,
        first.pk: False,
        second.pk: False,
        third.pk: False,
    }
    assert owner_api.get(f"/api/v1/backups/{third.pk}/").json()["restorable"] is False


def test_backups_filter_by_level(owner_api, mine, chain):
    incrementals = rows_by_id(owner_api.get("/api/v1/backups/", {"level": "incremental"}))
    fulls = rows_by_id(owner_api.get("/api/v1/backups/", {"level": "full"}))

    assert set(incrementals) == {p.pk for p in chain[1:]}
    assert set(fulls) == {chain[0].pk, mine.backup.pk}
    bad = owner_api.get("/api/v1/backups/", {"level": "differential"})
    assert bad.status_code == 400


def test_another_applications_chain_is_404_and_never_listed(owner_api, other_api, chain, theirs):
    their_chain = factories.build_chain(theirs.client, 3)

    assert owner_api.get(f"/api/v1/backups/{their_chain[-1].pk}/").status_code == 404
    assert owner_api.get(f"/api/v1/backups/{their_chain[0].pk}/").status_code == 404
    listed = rows_by_id(owner_api.get("/api/v1/backups/", {"level": "incremental"}))
    assert not set(listed) & {p.pk for p in their_chain}
    # And the other way round: their key does not see ours, even as a base.
    assert other_api.get(f"/api/v1/backups/{chain[-1].pk}/").status_code == 404
    theirs_listed = rows_by_id(other_api.get("/api/v1/backups/"))
    assert {row["base"] for row in theirs_listed.values()} <= {None, *(p.pk for p in their_chain)}


def test_the_backups_list_costs_the_same_queries_for_long_chains(owner_api, mine):
    factories.build_chain(mine.client, 3)
    owner_api.get("/api/v1/")  # the key's last use is recorded once a minute: not in the counts
    with CaptureQueriesContext(connection) as few:
        assert owner_api.get("/api/v1/backups/").status_code == 200
    long_client = factories.BackupClientFactory(application=mine.client.application, agent=mine.agent)
    factories.build_chain(long_client, 40)
    with CaptureQueriesContext(connection) as many:
        response = owner_api.get("/api/v1/backups/", {"page_size": 50})

    assert len(response.json()["results"]) == 44
    # key, team check, one page of rows (restorable is a correlated EXISTS in it)
    assert len(many) == len(few) == 3


# --- Policies -------------------------------------------------------------------------------------


def test_policies_show_their_backup_levels_to_every_signed_in_caller(owner_api, other_api, db):
    weekly = factories.ProtectionPolicyFactory(name="Files weekly", full_every_days=7)
    counted = factories.ProtectionPolicyFactory(name="Every tenth", full_every_backups=10)
    fulls = factories.ProtectionPolicyFactory(name="Always full")

    for api in (owner_api, other_api):
        response = api.get("/api/v1/policies/")
        assert response.status_code == 200
        rows = response.json()["results"]
        assert [row["name"] for row in rows] == ["Always full", "Every tenth", "Files weekly"]
        assert set(rows[0]) == POLICY_FIELDS
    levels = {
        row["name"]: (row["full_every_days"], row["full_every_backups"])
        for row in owner_api.get("/api/v1/policies/").json()["results"]
    }
    assert levels == {"Files weekly": (7, None), "Every tenth": (None, 10), "Always full": (None, None)}
    detail = owner_api.get(f"/api/v1/policies/{weekly.pk}/").json()
    assert detail["full_every_days"] == 7 and detail["id"] == weekly.pk
    assert counted and fulls
    assert "storage_target" not in detail  # storage is the backup team's business


def test_policies_need_a_key_and_cannot_be_changed(client, owner_api, db):
    policy = factories.ProtectionPolicyFactory(full_every_days=7)

    assert client.get("/api/v1/policies/").status_code in (401, 403)
    assert owner_api.patch(f"/api/v1/policies/{policy.pk}/", {"full_every_days": 1}).status_code == 405
    assert owner_api.get("/api/v1/policies/999999/").status_code == 404


def test_the_policies_list_costs_the_same_queries_for_more_policies(owner_api, db):
    factories.ProtectionPolicyFactory()
    owner_api.get("/api/v1/")
    with CaptureQueriesContext(connection) as few:
        owner_api.get("/api/v1/policies/")
    for days in range(1, 8):
        factories.ProtectionPolicyFactory(full_every_days=days)
    with CaptureQueriesContext(connection) as many:
        owner_api.get("/api/v1/policies/")

    # key, team check, count, rows
    assert len(many) == len(few) == 4
