"""Lists: keyset pages for backups and jobs, and a constant number of queries whatever the rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.choices import JobState
from tests import factories
from tests.factories import build_estate
from tests.requests.factories import submit_client, submit_restore

pytestmark = pytest.mark.django_db


def walk(client, url: str, **params) -> tuple[list[int], list[str]]:
    """Follow ``next`` from the first page to the last; the ids seen and the links followed."""
    ids, links = [], []
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.json()
        data = response.json()
        assert "count" not in data  # keyset pages never count
        ids += [row["id"] for row in data["results"]]
        if not data["next"]:
            return ids, links
        links.append(data["next"])
        response = client.get(data["next"])


def test_backups_page_by_cursor_through_ties_without_skipping_or_repeating(owner_api, mine):
    # An agent's poll claims several jobs at one instant: their backups share taken_at.
    instant = timezone.now() - timedelta(hours=1)
    tied = [factories.BackupFactory(client=mine.client, taken_at=instant) for _ in range(5)]
    older = [
        factories.BackupFactory(client=mine.client, taken_at=instant - timedelta(minutes=m)) for m in (1, 2)
    ]
    expected = [mine.backup.pk] + sorted((b.pk for b in tied), reverse=True) + [b.pk for b in older]

    ids, links = walk(owner_api, "/api/v1/backups/", page_size=3)

    assert ids == expected
    assert len(links) == 2


def test_previous_goes_back_to_the_same_rows(owner_api, mine):
    for minutes in range(1, 7):
        factories.BackupFactory(client=mine.client, taken_at=timezone.now() - timedelta(minutes=minutes))
    first = owner_api.get("/api/v1/backups/", {"page_size": 3}).json()
    second = owner_api.get(first["next"]).json()

    back = owner_api.get(second["previous"]).json()

    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    assert back["previous"] is None
    assert first["previous"] is None


def test_previous_pages_back_through_tied_rows_to_the_same_pages(owner_api, mine):
    # One scheduler run gives all its jobs one created_at (DRF's CursorPagination loses its way here).
    instant = timezone.now() - timedelta(hours=1)
    for _ in range(7):
        factories.JobFactory(client=mine.client, state=JobState.FAILED, created_at=instant)
    forwards = [owner_api.get("/api/v1/jobs/", {"page_size": 2}).json()]
    while forwards[-1]["next"]:
        forwards.append(owner_api.get(forwards[-1]["next"]).json())
    backwards = [forwards[-1]]
    while backwards[-1]["previous"]:
        backwards.append(owner_api.get(backwards[-1]["previous"]).json())

    pages = [[row["id"] for row in page["results"]] for page in forwards]
    assert [[row["id"] for row in page["results"]] for page in reversed(backwards)] == pages
    assert len(pages) >= 4 and all(pages)


def test_jobs_page_by_cursor_with_filters_kept(owner_api, mine):
    for _ in range(5):
        factories.JobFactory(client=mine.client, state=JobState.FAILED)
    factories.JobFactory(client=mine.client, state=JobState.QUEUED)

    ids, links = walk(owner_api, "/api/v1/jobs/", page_size=2, state="failed")

    assert len(ids) == 5 and len(set(ids)) == 5
    assert all("state=failed" in link for link in links)


def test_page_size_is_capped(owner_api, mine):
    response = owner_api.get("/api/v1/backups/", {"page_size": 100_000})

    assert response.status_code == 200


# --- Query counts ----------------------------------------------------------------------------------


def grow(owner, app, count: int) -> None:
    """``count`` more clients, each with backups, jobs, an alert and requests of both kinds."""
    policy = factories.ProtectionPolicyFactory()
    for _ in range(count):
        estate = build_estate(app)
        factories.BackupFactory(client=estate.client, taken_at=timezone.now() - timedelta(days=1))
        factories.JobFactory(client=estate.client, state=JobState.FAILED)
        factories.AlertFactory(client=estate.client)
        submit_restore(owner, backup=estate.backup)
        submit_client(owner, application=app, policy=policy)


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.json()
    assert response.json()["results"]
    return len(captured.captured_queries)


LISTS = {
    # key, team check, rows
    "/api/v1/backups/": 3,
    "/api/v1/jobs/": 3,
    # key, team check, count, rows
    "/api/v1/applications/": 4,
    "/api/v1/clients/": 4,
    "/api/v1/alerts/": 4,
    "/api/v1/restore-requests/": 4,
    "/api/v1/client-requests/": 4,
}


@pytest.mark.parametrize("url, expected", LISTS.items())
def test_list_query_count_is_constant(owner_api, owner, app, url, expected):
    grow(owner, app, 2)
    owner_api.get("/api/v1/")  # the key's last use is recorded once a minute: not in the counts
    few = count_queries(owner_api, url)
    grow(owner, app, 6)
    many = count_queries(owner_api, url)

    assert few == many == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("/api/v1/restore-requests/?external_ref=INC1", 4),
        ("/api/v1/backups/?application=orders&status=available", 3),
        ("/api/v1/clients/?application=orders", 4),
    ],
)
def test_filtered_lists_cost_the_same(owner_api, owner, app, url, expected):
    grow(owner, app, 3)
    estate = build_estate(app)
    submit_restore(owner, backup=estate.backup, external_ref="INC1")
    owner_api.get("/api/v1/")

    assert count_queries(owner_api, url) == expected


def test_a_deep_cursor_page_costs_what_the_first_costs(owner_api, owner, app):
    grow(owner, app, 5)
    owner_api.get("/api/v1/")
    first = owner_api.get("/api/v1/backups/", {"page_size": 2}).json()
    deep = first
    for _ in range(3):
        deep = owner_api.get(deep["next"]).json()

    with CaptureQueriesContext(connection) as captured:
        owner_api.get(deep["next"])

    assert len(captured.captured_queries) == 3
