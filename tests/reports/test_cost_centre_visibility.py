"""Issue #10: a report that holds several applications' figures reaches only users entitled to all of them.

CC-100 holds Orders (``app``) and Web Shop (``tests.reports.conftest.shared_center``).
``owner`` owns both; ``other_owner`` owns Web Shop only. Through the portal's
Reports page and download, and through ``GET /api/v1/reports/`` and its download
links: the partial owner gets neither the row nor the file (404, as for a report
that does not exist), the full owner and the backup team get both.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from catalog.models import Application
from reports import tasks
from reports.models import Report
from tests import factories
from tests.reports.builders import OCTOBER, api_client, listed, make_report

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]

LIST = "/api/v1/reports/"

#: Queries of the Reports page for an owner: session, user, backup-team group, page count, the rows.
PORTAL_LIST_QUERIES = 5
#: Queries of GET /api/v1/reports/ with an owner's key, once warm: the key with its user,
#: backup-team group, count, the rows.
API_LIST_QUERIES = 4


def download(report) -> str:
    return reverse("reports:download", args=[report.pk])


def api_ids(response) -> set[int]:
    assert response.status_code == 200
    return {row["id"] for row in response.json()["results"]}


def content(response) -> str:
    return b"".join(response.streaming_content).decode("utf-8-sig")


def test_the_cost_centre_report_records_the_applications_it_holds(shared_center, app):
    assert set(shared_center.center_report.applications.all()) == {app, shared_center.web_shop}
    assert set(shared_center.shop_report.applications.all()) == {shared_center.web_shop}


def test_partial_owner_cannot_list_or_download_the_cost_centre_report(client, other_owner, shared_center):
    client.force_login(other_owner)

    page = client.get(reverse("reports:report-list"))

    assert page.status_code == 200
    assert shared_center.center_report.pk not in listed(page)
    assert b"CC-100" not in page.content
    assert client.get(download(shared_center.center_report)).status_code == 404


def test_partial_owner_cannot_list_or_download_the_cost_centre_report_through_the_api(
    other_owner, shared_center
):
    api = api_client(other_owner)
    report = shared_center.center_report

    assert report.pk not in api_ids(api.get(LIST))
    assert api.get(f"{LIST}{report.pk}/").status_code == 404
    assert api.get(f"{LIST}{report.pk}/download/").status_code == 404


def test_full_owner_lists_and_downloads_the_cost_centre_report(client, owner, shared_center):
    client.force_login(owner)

    page = client.get(reverse("reports:report-list"))
    response = client.get(download(shared_center.center_report))

    assert shared_center.center_report.pk in listed(page)
    assert response.status_code == 200
    csv = content(response)
    assert "orders-db" in csv and "shop-db" in csv


def test_full_owner_lists_and_downloads_the_cost_centre_report_through_the_api(owner, shared_center):
    api = api_client(owner)

    rows = {row["id"]: row for row in api.get(LIST).json()["results"]}
    response = api.get(rows[shared_center.center_report.pk]["download_url"])

    assert rows[shared_center.center_report.pk]["cost_center"] == "CC-100"
    assert response.status_code == 200
    assert "orders-db" in content(response)


def test_full_owner_through_the_api_with_a_session(owner, shared_center):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_login(owner)

    assert shared_center.center_report.pk in api_ids(api.get(LIST))
    assert api.get(f"{LIST}{shared_center.center_report.pk}/download/").status_code == 200


def test_owning_through_the_owner_group_counts_once(client, owner, app, shared_center):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="orders-team")
    app.owner_group = group
    app.save()
    owner.groups.add(group)
    client.force_login(owner)
    both_ways = api_client(owner).get(LIST).json()["results"]  # owner directly and by group
    app.owners.remove(owner)

    assert sorted(row["id"] for row in both_ways) == sorted(
        [shared_center.center_report.pk, shared_center.shop_report.pk]
    )
    assert client.get(download(shared_center.center_report)).status_code == 200  # by group only


@pytest.mark.parametrize("persona", ["backup_admin", "superuser"])
def test_backup_team_lists_and_downloads_the_cost_centre_report(client, request, persona, shared_center):
    user = request.getfixturevalue(persona)
    report = shared_center.center_report
    client.force_login(user)
    api = api_client(user)

    assert report.pk in listed(client.get(reverse("reports:report-list")))
    assert client.get(download(report)).status_code == 200
    assert report.pk in api_ids(api.get(LIST))
    assert api.get(f"{LIST}{report.pk}/download/").status_code == 200


def test_owner_still_sees_their_own_applications_report(client, other_owner, shared_center):
    client.force_login(other_owner)
    api = api_client(other_owner)
    report = shared_center.shop_report

    assert listed(client.get(reverse("reports:report-list"))) == {report.pk}
    assert client.get(download(report)).status_code == 200
    assert api_ids(api.get(LIST)) == {report.pk}
    response = api.get(f"{LIST}{report.pk}/download/")
    assert response.status_code == 200
    assert "shop-db" in content(response) and "orders-db" not in content(response)


def test_entitlement_is_decided_at_the_time_of_the_request(client, owner, app, shared_center):
    client.force_login(owner)
    assert client.get(download(shared_center.center_report)).status_code == 200

    app.owners.remove(owner)

    assert client.get(download(shared_center.center_report)).status_code == 404
    assert shared_center.center_report.pk not in listed(client.get(reverse("reports:report-list")))


def test_an_application_that_left_the_cost_centre_since_still_guards_the_report(
    client, other_owner, app, shared_center
):
    # Orders moves away: the report keeps its figures, so Web Shop's owner still may not read it.
    Application.objects.filter(pk=app.pk).update(cost_center=factories.CostCenterFactory())
    client.force_login(other_owner)

    assert client.get(download(shared_center.center_report)).status_code == 404


def test_an_application_that_joined_the_cost_centre_since_does_not_lock_the_owner_out(
    client, owner, shared_center
):
    factories.ApplicationFactory(cost_center=shared_center.center)  # somebody else's, after the report
    client.force_login(owner)

    assert client.get(download(shared_center.center_report)).status_code == 200


def test_regenerating_records_the_cost_centres_applications_anew(
    client, owner, other_owner, app, shared_center
):
    from reports import delivery

    Application.objects.filter(pk=app.pk).update(cost_center=factories.CostCenterFactory())
    again = delivery.generate("chargeback", OCTOBER, formats=("csv",), cost_center=shared_center.center)[
        "csv"
    ]
    client.force_login(other_owner)

    assert again.pk == shared_center.center_report.pk
    assert set(again.applications.all()) == {shared_center.web_shop}
    response = client.get(download(again))
    assert response.status_code == 200 and "orders-db" not in content(response)


def test_a_cost_centre_report_that_records_no_application_is_the_backup_teams(
    client, owner, backup_admin, app
):
    old = make_report(cost_center=app.cost_center, covers=())  # made before coverage was recorded
    client.force_login(owner)
    assert client.get(download(old)).status_code == 404
    client.force_login(backup_admin)
    assert client.get(download(old)).status_code == 200


def test_cost_centre_owner_still_gets_the_chargeback_by_mail(shared_center, mailoutbox):
    tasks.deliver_chargeback(shared_center.center.pk, str(OCTOBER))

    [mail] = mailoutbox
    assert mail.to == ["online-finance@example.com"]
    assert "CC-100" in mail.subject
    files = {name: body for name, body, _ in mail.attachments}
    assert set(files) == {"chargeback-2026-10-CC-100.pdf", "chargeback-2026-10-CC-100.csv"}
    csv = files["chargeback-2026-10-CC-100.csv"]
    assert "orders-db" in csv and "shop-db" in csv  # every application's clients, whoever owns them
    mailed = Report.objects.filter(cost_center=shared_center.center, emailed_to="online-finance@example.com")
    assert mailed.count() == 2


def add_reports(center, n: int) -> None:
    """``n`` months of CC-100's chargeback and of Web Shop's, all visible to ``owner``."""
    web_shop = Application.objects.get(slug="web-shop")
    for months_back in range(1, n + 1):
        month = OCTOBER.shifted(-months_back)
        make_report(cost_center=center, month=month)
        make_report(application=web_shop, month=month, fmt="csv")


def test_the_list_costs_the_same_queries_for_more_reports(client, owner, shared_center):
    client.force_login(owner)
    api = api_client(owner)
    url = reverse("reports:report-list")
    client.get(url)  # warm up: the session's first save, the key's "last used"
    api.get(LIST)
    with CaptureQueriesContext(connection) as portal_few:
        client.get(url)
    with CaptureQueriesContext(connection) as api_few:
        api.get(LIST)
    add_reports(shared_center.center, 10)
    with CaptureQueriesContext(connection) as portal_many:
        page = client.get(url)
    with CaptureQueriesContext(connection) as api_many:
        rows = api.get(LIST).json()

    assert len(listed(page)) == 2 + 2 * 10 and rows["count"] == 2 + 2 * 10
    assert len(portal_many) == len(portal_few) == PORTAL_LIST_QUERIES
    assert len(api_many) == len(api_few) == API_LIST_QUERIES
