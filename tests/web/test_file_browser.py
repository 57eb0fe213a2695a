"""Browsing, searching and restoring single files of a recovery point, through the owners' pages.

Each test writes a real file list with the agent's IndexWriter where the portal looks for it
(``file_lists.index_file``; the autouse ``index_root`` fixture keeps it in a tmp folder).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from catalog.choices import Plugin
from catalog.models import Agent
from catalog.services import file_lists
from requests_app.models import RestoreRequest
from tests import factories
from tests.factories import build_estate
from tests.index_files import give_file_list

NO_FILE_LIST = "No file list: this recovery point was taken before file lists existed"

# A tree: a dict is a folder, an int a file of that size, ("->", target) a symlink (tests/index_files.py).
WEBSHOP = {
    "srv/webshop": {
        "media": {
            "invoices": {"invoice-2025-001.pdf": 120_000, "invoice-2025-002.pdf": 98_000},
            "logo.png": 4096,
            "current": ("->", "invoices"),
        },
        "app.py": 2048,
    }
}


def browse_url(backup, path: str | None = None, **params) -> str:
    url = reverse("catalog:browse", args=[backup.client_id, backup.pk])
    if path is None:
        return url
    return url + "?" + "&".join([f"path={path}", *(f"{k}={v}" for k, v in params.items())])


def search_url(client) -> str:
    return reverse("catalog:search", args=[client.pk])


def restore_url(backup) -> str:
    return reverse("requests:restore", args=[backup.pk])


def page(response) -> str:
    return response.content.decode()


@pytest.fixture
def webshop(mine):
    give_file_list(mine.backup, WEBSHOP)
    # An agent that restores a selection (older ones would restore everything: the service refuses).
    mine.agent.protocol = Agent.SELECTIVE_RESTORE_PROTOCOL
    mine.agent.save(update_fields=["protocol"])
    return mine.backup


# --- the folder page -----------------------------------------------------------------------


@pytest.mark.django_db
def test_folder_listing_with_breadcrumbs_sizes_times_and_modes(owner_client, webshop):
    response = owner_client.get(browse_url(webshop), {"path": "/srv/webshop/media"})
    assert response.status_code == 200
    html = page(response)
    # Breadcrumbs: every folder above is a link, the folder itself is not.
    for crumb in ("/", "/srv", "/srv/webshop"):
        assert f'href="{browse_url(webshop)}?path={crumb.replace("/", "%2F")}"' in html
    assert '<span aria-current="page">media</span>' in html
    # Folders link into themselves; files are rows with a checkbox of their full path.
    assert f'href="{browse_url(webshop)}?path=%2Fsrv%2Fwebshop%2Fmedia%2Finvoices"' in html
    assert 'name="path" value="/srv/webshop/media/logo.png"' in html
    assert 'name="path" value="/srv/webshop/media/invoices"' in html
    assert "4.0 KiB" in html
    assert "2026-01-02 03:04" in html
    assert "-rw-r--r--" in html and "drwxr-xr-x" in html and "lrwxrwxrwx" in html
    assert "→ invoices" in html  # where the symbolic link points
    assert "Restore selected…" in html
    # In the order the agent listed the folder: by name, as `ls` sorts in the C locale.
    assert [row.entry.name for row in response.context["rows"]] == ["current", "invoices", "logo.png"]


@pytest.mark.django_db
def test_implied_folders_above_the_backed_up_path(owner_client, webshop):
    root = owner_client.get(browse_url(webshop))
    assert [(row.entry.name, row.mode) for row in root.context["rows"]] == [("srv", "")]  # implied: no mode
    assert f'href="{browse_url(webshop)}?path=%2Fsrv"' in page(root)
    srv = owner_client.get(browse_url(webshop), {"path": "/srv"})
    assert srv.status_code == 200
    assert [(row.entry.path, row.mode) for row in srv.context["rows"]] == [("/srv/webshop", "drwxr-xr-x")]


@pytest.mark.django_db
def test_pages_of_a_hundred_with_previous_and_next(owner_client, mine):
    give_file_list(mine.backup, {"data": {f"file-{i:03d}.bin": i for i in range(250)}})
    first = owner_client.get(browse_url(mine.backup), {"path": "/data"})
    assert len(first.context["rows"]) == 100
    assert "1–100 of 250" in page(first)
    assert first.context["next_url"].endswith("page=2")
    assert first.context["previous_url"] == ""
    third = owner_client.get(browse_url(mine.backup), {"path": "/data", "page": 3})
    assert [row.entry.name for row in third.context["rows"]][:1] == ["file-200.bin"]
    assert len(third.context["rows"]) == 50
    assert third.context["next_url"] == "" and third.context["previous_url"].endswith("page=2")
    past_the_end = owner_client.get(browse_url(mine.backup), {"path": "/data", "page": 99})
    assert past_the_end.context["page"] == 3
    assert owner_client.get(browse_url(mine.backup), {"path": "/data", "page": "x"}).context["page"] == 1


@pytest.mark.django_db
def test_long_and_escaped_names_are_shown_as_tar_does(owner_client, mine):
    long_name = "a-very-long-name-without-any-space-" * 6 + ".pdf"
    give_file_list(mine.backup, {"docs": {b"inv\xff.pdf": 10, long_name: 20}})
    html = page(owner_client.get(browse_url(mine.backup), {"path": "/docs"}))
    assert 'value="/docs/inv\\377.pdf"' in html
    assert long_name in html


@pytest.mark.django_db
def test_database_point_lists_schemas_then_tables_with_rows_and_size(owner_client, app):
    estate = build_estate(app, plugin=Plugin.POSTGRESQL, options={"database": "orders"})
    objects = [
        {"schema": "public", "name": "orders", "type": "table", "rows": 1200, "bytes": 4 * 1024**2},
        {"schema": "public", "name": "order_lines", "type": "table", "rows": 8000, "bytes": 2048},
        {"schema": "public", "name": "open_orders", "type": "view"},
        {"schema": "audit", "name": "log", "type": "table", "rows": 5},
    ]
    give_file_list(estate.backup, kind="postgresql", objects=objects)
    root = owner_client.get(browse_url(estate.backup))
    assert root.status_code == 200
    assert [(r.entry.name, r.kind, r.selectable) for r in root.context["rows"]] == [
        ("audit", "Schema", False),
        ("public", "Schema", False),
    ]
    assert "Tables of the recovery point" in page(root)
    public = owner_client.get(browse_url(estate.backup), {"path": "/public"})
    html = page(public)
    assert [r.entry.name for r in public.context["rows"]] == ["open_orders", "order_lines", "orders"]
    assert "1200" in html and "4.0 MiB" in html and "View" in html
    assert 'name="path" value="/public/orders"' in html
    assert "Modified" not in html  # a dump has no file times or modes


@pytest.mark.django_db
def test_point_without_a_file_list_says_so_and_offers_the_whole_restore(owner_client, mine):
    response = owner_client.get(browse_url(mine.backup), {"path": "/srv"})
    assert response.status_code == 200
    html = page(response)
    assert NO_FILE_LIST in html and "It can be restored whole." in html
    assert f'href="{restore_url(mine.backup)}"' in html
    assert 'name="path"' not in html


@pytest.mark.django_db
def test_an_unreadable_file_list_is_a_message_not_an_error(owner_client, webshop):
    file_lists.index_file(webshop.job_id).write_bytes(b"not an index")
    response = owner_client.get(browse_url(webshop))
    assert response.status_code == 200
    assert "cannot be read" in page(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/srv/nothing-here", "/srv/nothing-here is not in this recovery point."),
        ("/srv/webshop/app.py", "/srv/webshop/app.py is a file, not a folder."),
        ("relative/path", "Give an absolute path, starting with /."),
        ("/srv/../etc", "A path may not contain"),
        ("/srv/bad\\q", "unknown escape"),
    ],
)
def test_unknown_or_invalid_path_is_a_clear_400(owner_client, webshop, path, message):
    response = owner_client.get(browse_url(webshop), {"path": path})
    assert response.status_code == 400
    html = page(response)
    assert message in html
    assert f'href="{browse_url(webshop)}?path=%2F"' in html  # back to / of the point


# --- tenancy ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_another_applications_point_and_client_are_404(other_client, webshop, theirs):
    assert other_client.get(browse_url(webshop), {"path": "/srv"}).status_code == 404
    assert other_client.get(search_url(webshop.client), {"name": "invoice-*"}).status_code == 404
    response = other_client.post(
        restore_url(webshop) + "?path=/srv/webshop/app.py",
        {"path": ["/srv/webshop/app.py"], "target_agent": theirs.agent.pk, "target_location": "/srv/x"},
    )
    assert response.status_code == 404
    assert other_client.get(restore_url(webshop), {"path": "/srv/webshop/app.py"}).status_code == 404
    assert not RestoreRequest.objects.exists()


@pytest.mark.django_db
def test_a_point_under_another_client_id_is_404(owner_client, app, webshop):
    other_client_of_mine = build_estate(app).client
    url = reverse("catalog:browse", args=[other_client_of_mine.pk, webshop.pk])
    assert owner_client.get(url).status_code == 404


# --- search ---------------------------------------------------------------------------------


@pytest.fixture
def three_points(mine):
    """The webshop's point (newest), an older one with the same invoices, an oldest with another size."""
    now = timezone.now()
    older = factories.BackupFactory(client=mine.client, taken_at=now - timedelta(days=1))
    oldest = factories.BackupFactory(client=mine.client, taken_at=now - timedelta(days=2))
    no_list = factories.BackupFactory(client=mine.client, taken_at=now - timedelta(days=3))
    give_file_list(mine.backup, WEBSHOP)
    give_file_list(older, WEBSHOP)
    changed = {"srv/webshop": {"media": {"invoices": {"invoice-2025-001.pdf": 50_000}}}}
    give_file_list(oldest, changed)
    return mine.backup, older, oldest, no_list


@pytest.mark.django_db
def test_search_groups_versions_by_path_newest_first(owner_client, three_points):
    newest, older, oldest, _ = three_points
    response = owner_client.get(search_url(newest.client), {"name": "INVOICE-*.pdf"})
    assert response.status_code == 200
    results = response.context["results"]
    assert [item.path for item, _ in results] == [
        "/srv/webshop/media/invoices/invoice-2025-001.pdf",
        "/srv/webshop/media/invoices/invoice-2025-002.pdf",
    ]
    first_rows = results[0][1]
    assert [(r.version.backup_id, r.version.points) for r in first_rows] == [(newest.pk, 2), (oldest.pk, 1)]
    html = page(response)
    assert "in 2 points" in html and "in 1 point" in html
    assert "117.2 KiB" in html and "48.8 KiB" in html
    restore_link = f"{restore_url(oldest)}?path=%2Fsrv%2Fwebshop%2Fmedia%2Finvoices%2Finvoice-2025-001.pdf"
    assert restore_link in html
    assert f"{browse_url(oldest)}?path=%2Fsrv%2Fwebshop%2Fmedia%2Finvoices" in html
    assert "Restore this version" in html


@pytest.mark.django_db
def test_search_text_without_wildcards_matches_part_of_names(owner_client, webshop):
    response = owner_client.get(search_url(webshop.client), {"name": "logo"})
    assert [item.path for item, _ in response.context["results"]] == ["/srv/webshop/media/logo.png"]
    assert "Nothing named" in page(owner_client.get(search_url(webshop.client), {"name": "nope"}))


@pytest.mark.django_db
def test_search_says_when_it_stopped(owner_client, webshop, monkeypatch):
    monkeypatch.setattr(file_lists, "MAX_MATCHES", 1)
    response = owner_client.get(search_url(webshop.client), {"name": "invoice-*"})
    assert response.context["truncated"]
    assert "More than 1 matches: narrow the search." in page(response)


@pytest.mark.django_db
def test_search_with_a_slash_is_a_field_error(owner_client, webshop):
    response = owner_client.get(search_url(webshop.client), {"name": "media/logo.png"})
    assert response.status_code == 200
    assert "Search by file name" in page(response)


@pytest.mark.django_db
def test_search_page_without_a_name_shows_the_box(owner_client, mine):
    response = owner_client.get(search_url(mine.client))
    assert response.status_code == 200
    assert 'name="name"' in page(response) and "results" not in response.context


# --- entry points on the client page -------------------------------------------------------


@pytest.mark.django_db
def test_client_page_links_each_point_to_its_files_and_has_a_search_box(owner_client, mine, webshop):
    without = factories.BackupFactory(client=mine.client, taken_at=timezone.now() - timedelta(days=1))
    html = page(owner_client.get(reverse("catalog:client", args=[mine.client.pk])))
    assert f'href="{browse_url(webshop)}">Browse files</a>' in html
    assert "no file list" in html
    assert browse_url(without) not in html
    assert f'action="{search_url(mine.client)}"' in html


# --- the restore form with a selection -------------------------------------------------------


@pytest.mark.django_db
def test_selection_reaches_the_restore_form_as_a_list_and_hidden_fields(owner_client, webshop):
    response = owner_client.get(
        restore_url(webshop), {"path": ["/srv/webshop/media/logo.png", "/srv/webshop/app.py"]}
    )
    html = page(response)
    assert "You are restoring 2 selected items:" in html
    assert "<code>/srv/webshop/media/logo.png</code>" in html
    assert html.count('type="hidden" name="path"') == 2


@pytest.mark.django_db
def test_without_a_selection_the_form_restores_everything(owner_client, webshop):
    html = page(owner_client.get(restore_url(webshop)))
    assert "You are restoring everything in this recovery point." in html
    assert 'type="hidden" name="path"' not in html


@pytest.mark.django_db
def test_posted_selection_becomes_the_requests_paths(owner_client, mine, webshop):
    response = owner_client.post(
        restore_url(webshop),
        {
            "path": ["/srv/webshop/media/logo.png", "/srv/webshop/media/invoices"],
            "target_agent": mine.agent.pk,
            "target_location": "/srv/restore/today",
        },
    )
    restore = RestoreRequest.objects.get()
    assert response.status_code == 302
    assert sorted(restore.paths) == ["/srv/webshop/media/invoices", "/srv/webshop/media/logo.png"]


@pytest.mark.django_db
def test_a_path_not_in_the_point_is_an_error_on_the_form(owner_client, mine, webshop):
    response = owner_client.post(
        restore_url(webshop),
        {
            "path": ["/srv/webshop/gone.txt"],
            "target_agent": mine.agent.pk,
            "target_location": "/srv/restore/x",
        },
    )
    assert response.status_code == 200
    assert "/srv/webshop/gone.txt is not in this recovery point." in page(response)
    assert "You are restoring 1 selected item:" in page(response)
    assert not RestoreRequest.objects.exists()


@pytest.mark.django_db
def test_post_with_a_selection_needs_the_csrf_token(owner, mine, webshop):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    response = browser.post(
        restore_url(webshop),
        {"path": ["/srv/webshop/app.py"], "target_agent": mine.agent.pk, "target_location": "/srv/restore/x"},
    )
    assert response.status_code == 403
    assert not RestoreRequest.objects.exists()


# --- queries ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_folder_page_costs_the_same_queries_for_ten_or_three_hundred_entries(
    owner_client, mine, django_assert_max_num_queries
):
    small = factories.BackupFactory(client=mine.client)
    give_file_list(small, {"data": {f"f{i}": i for i in range(10)}})
    give_file_list(mine.backup, {"data": {f"f{i}": i for i in range(300)}})
    owner_client.get(browse_url(small, "/data"))  # the session's first touch
    with django_assert_max_num_queries(4):
        assert owner_client.get(browse_url(small, "/data")).status_code == 200
    with django_assert_max_num_queries(4):
        assert owner_client.get(browse_url(mine.backup, "/data", page=2)).status_code == 200


@pytest.mark.django_db
def test_search_costs_the_same_queries_for_one_or_three_points(
    owner_client, three_points, django_assert_max_num_queries
):
    client = three_points[0].client
    with django_assert_max_num_queries(5):
        response = owner_client.get(search_url(client), {"name": "*.pdf"})
    assert len(response.context["results"]) == 2
