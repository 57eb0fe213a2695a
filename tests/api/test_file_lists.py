"""Browsing and searching recovery points' file lists through the API (/backups/{id}/files/,
/clients/{id}/files/): pages, folders only implied, refusals, tenancy, and a constant number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.choices import BackupStatus, Plugin
from tests import factories
from tests.index_files import WEBSHOP, give_file_list

pytestmark = pytest.mark.django_db


def files(api, backup, **params):
    return api.get(f"/api/v1/backups/{backup.pk}/files/", params)


def search(api, client, **params):
    return api.get(f"/api/v1/clients/{client.pk}/files/", params)


@pytest.fixture
def shop(mine):
    give_file_list(mine.backup, WEBSHOP)
    return mine.backup


# --- browsing -----------------------------------------------------------------------------------


def test_a_folder_lists_its_entries_with_their_facts(owner_api, shop):
    response = files(owner_api, shop, path="/srv/webshop")

    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["count"] == 3
    assert (data["next"], data["previous"]) == (None, None)
    assert data["path"] == "/srv/webshop"
    assert data["crumbs"] == [
        {"name": "/", "path": "/"},
        {"name": "srv", "path": "/srv"},
        {"name": "webshop", "path": "/srv/webshop"},
    ]
    rows = {row["name"]: row for row in data["results"]}
    assert list(rows) == ["app.py", "current", "media"]
    assert rows["app.py"] == {
        "name": "app.py",
        "path": "/srv/webshop/app.py",
        "type": "file",
        "size": 512,
        "mtime": "2026-01-02T03:04:05Z",
        "mode": "0644",
        "link": None,
        "rows": None,
    }
    assert (rows["current"]["type"], rows["current"]["link"]) == ("symlink", "releases/42")
    media = rows["media"]
    assert (media["type"], media["size"], media["mode"]) == ("directory", None, "0755")


def test_the_root_and_folders_above_the_backed_up_paths_are_implied(owner_api, shop):
    root = files(owner_api, shop).json()
    above = files(owner_api, shop, path="/srv/").json()

    assert [(row["name"], row["type"], row["mtime"]) for row in root["results"]] == [
        ("etc", "directory", None),
        ("srv", "directory", None),
    ]
    assert root["path"] == "/" and root["crumbs"] == [{"name": "/", "path": "/"}]
    assert above["path"] == "/srv"
    assert [row["path"] for row in above["results"]] == ["/srv/webshop"]


def test_a_big_folder_is_paged_with_next_and_previous(owner_api, mine):
    give_file_list(mine.backup, {"data": {f"f{i:03d}.txt": i for i in range(120)}})

    first = files(owner_api, mine.backup, path="/data", page_size=50).json()
    second = owner_api.get(first["next"]).json()
    third = owner_api.get(second["next"]).json()

    assert first["count"] == second["count"] == third["count"] == 120
    assert first["previous"] is None
    assert [row["name"] for row in first["results"]][:2] == ["f000.txt", "f001.txt"]
    assert [row["name"] for row in second["results"]][0] == "f050.txt"
    assert [row["name"] for row in third["results"]] == [f"f{i}.txt" for i in range(100, 120)]
    assert third["next"] is None
    assert "path=%2Fdata" in third["previous"]
    assert owner_api.get(third["previous"]).json()["results"] == second["results"]
    assert owner_api.get(second["previous"]).json()["results"] == first["results"]
    assert files(owner_api, mine.backup, path="/data", page=4, page_size=50).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/srv/webshop/app.py",  # a file
        "/srv/nothing-here",  # not in the point
        "/srv/../etc",  # no way out
        "srv/webshop",  # relative
        "/srv/bad\\q",  # not an escape
    ],
)
def test_a_path_that_is_not_a_folder_of_the_point_is_400(owner_api, shop, path):
    response = files(owner_api, shop, path=path)

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_path"


def test_a_point_without_a_file_list_is_404_no_file_list(owner_api, mine):
    response = files(owner_api, mine.backup)

    assert response.status_code == 404
    assert response.json()["code"] == "no_file_list"
    assert "restored whole" in response.json()["detail"]


def test_a_database_point_lists_schemas_then_tables(owner_api, app):
    estate = factories.build_estate(app, plugin=Plugin.POSTGRESQL, options={"database": "orders"})
    give_file_list(
        estate.backup,
        kind="postgresql",
        objects=[
            {"schema": "public", "name": "orders", "type": "table", "rows": 1200, "bytes": 65536},
            {"schema": "public", "name": "customers", "type": "table", "rows": 40},
            {"schema": "audit", "name": "log", "type": "table", "rows": 9},
        ],
    )

    schemas = files(owner_api, estate.backup).json()
    tables = files(owner_api, estate.backup, path="/public").json()

    assert [(row["name"], row["type"]) for row in schemas["results"]] == [
        ("audit", "schema"),
        ("public", "schema"),
    ]
    assert [(row["name"], row["rows"], row["mtime"], row["mode"]) for row in tables["results"]] == [
        ("customers", 40, None, None),
        ("orders", 1200, None, None),
    ]


def test_another_applications_point_is_404(other_api, owner_api, shop, theirs):
    give_file_list(theirs.backup, WEBSHOP)

    assert files(other_api, shop).status_code == 404
    assert search(other_api, shop.client, name="invoice").status_code == 404
    assert files(owner_api, theirs.backup).status_code == 404
    assert files(owner_api, theirs.backup).json()["code"] == "not_found"


def test_the_backup_team_sees_every_point(admin_api, shop):
    assert files(admin_api, shop, path="/etc/nginx").json()["results"][0]["name"] == "nginx.conf"


def test_without_credentials_it_is_401(shop):
    assert files(APIClient(), shop).status_code == 401
    assert search(APIClient(), shop.client, name="x").status_code == 401


def test_an_id_that_is_not_one_is_404(owner_api):
    assert owner_api.get("/api/v1/backups/abc/files/").status_code == 404
    assert owner_api.get("/api/v1/clients/99999999999999999999999/files/").status_code == 404


def test_a_listing_costs_the_same_few_queries_whatever_the_folder(
    owner_api, mine, django_assert_max_num_queries
):
    give_file_list(mine.backup, {"data": {f"d{i}": {f"f{j}": j for j in range(30)} for i in range(30)}})
    files(owner_api, mine.backup)  # warm: the key's last use is written at most once a while

    with django_assert_max_num_queries(4) as small:
        assert files(owner_api, mine.backup, path="/data/d3").status_code == 200
    with django_assert_max_num_queries(len(small)) as big:
        assert files(owner_api, mine.backup, path="/data", page_size=200).status_code == 200
    assert len(big) == len(small)


# --- searching ----------------------------------------------------------------------------------


@pytest.fixture
def history(mine):
    """Three points of one client, oldest first: the invoice unchanged in the first two, then changed."""
    client = mine.client
    now = timezone.now()
    points = [
        factories.BackupFactory(client=client, taken_at=now - timedelta(days=days)) for days in (3, 2, 1)
    ]
    mine.backup.delete()
    old = {"srv/webshop": {"media": {"Invoice-2026-01.pdf": (1200, 1000), "logo.png": 10}}}
    new = {"srv/webshop": {"media": {"Invoice-2026-01.pdf": (1250, 2000), "invoice-2026-02.pdf": 7}}}
    give_file_list(points[0], old)
    give_file_list(points[1], old)
    give_file_list(points[2], new)
    return points


def test_search_lists_versions_newest_first_and_merges_identical_ones(owner_api, mine, history):
    oldest, middle, newest = history

    response = search(owner_api, mine.client, name="invoice-*.pdf")

    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["count"] == 2 and data["truncated"] is False
    first, second = data["results"]
    assert first["path"] == "/srv/webshop/media/Invoice-2026-01.pdf"  # case ignored
    assert [(v["backup"], v["size"], v["points"]) for v in first["versions"]] == [
        (newest.pk, 1250, 1),
        (middle.pk, 1200, 2),  # the same version in the two older points
    ]
    assert first["versions"][1]["mtime"] == "1970-01-01T00:16:40Z"
    assert first["versions"][0]["type"] == "file"
    assert first["versions"][0]["taken_at"].endswith("Z")
    assert second["path"] == "/srv/webshop/media/invoice-2026-02.pdf"
    assert [v["backup"] for v in second["versions"]] == [newest.pk]


def test_a_file_deleted_and_put_back_unchanged_is_two_versions(owner_api, mine):
    now = timezone.now()
    points = [factories.BackupFactory(client=mine.client, taken_at=now - timedelta(n)) for n in (3, 2, 1)]
    mine.backup.delete()
    there = {"srv/app": {"report.pdf": (500, 1000)}}
    give_file_list(points[0], there)
    give_file_list(points[1], {"srv/app": {"other.txt": 1}})  # deleted that day
    give_file_list(points[2], there)  # put back as it was

    (match,) = search(owner_api, mine.client, name="report.pdf").json()["results"]

    assert [(v["backup"], v["points"]) for v in match["versions"]] == [(points[2].pk, 1), (points[0].pk, 1)]


def test_plain_text_matches_names_containing_it(owner_api, mine, history):
    paths = [row["path"] for row in search(owner_api, mine.client, name="LOGO").json()["results"]]
    assert paths == ["/srv/webshop/media/logo.png"]


def test_search_skips_points_that_are_gone_or_have_no_list(owner_api, mine, history):
    oldest, middle, newest = history
    type(newest).objects.filter(pk=newest.pk).update(status=BackupStatus.EXPIRED)
    factories.BackupFactory(client=mine.client)  # no file list

    (match,) = search(owner_api, mine.client, name="Invoice-2026-01.pdf").json()["results"]

    assert [(v["backup"], v["points"]) for v in match["versions"]] == [(middle.pk, 2)]


def test_search_pages_like_the_other_lists(owner_api, mine):
    give_file_list(mine.backup, {"data": {f"report-{i:02d}.csv": i for i in range(30)}})

    first = search(owner_api, mine.client, name="report-*", page_size=20).json()
    second = owner_api.get(first["next"]).json()

    assert first["count"] == 30
    assert len(first["results"]) == 20 and len(second["results"]) == 10
    assert second["next"] is None and second["previous"] is not None


@pytest.mark.parametrize("params", [{}, {"name": ""}, {"name": "   "}])
def test_search_needs_a_name(owner_api, mine, params):
    response = search(owner_api, mine.client, **params)

    assert response.status_code == 400
    assert "name" in response.json()["errors"]


def test_a_name_with_a_slash_is_400(owner_api, mine):
    response = search(owner_api, mine.client, name="srv/x")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path"


def test_a_client_without_file_lists_finds_nothing(owner_api, mine):
    data = search(owner_api, mine.client, name="x").json()
    assert (data["count"], data["results"], data["truncated"]) == (0, [], False)
