"""The reports page and downloads: owners see their cost centres' and applications' reports only."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests import factories
from tests.reports.builders import listed, make_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def estate(app, other_app):
    return {
        "company": make_report(),
        "mine": make_report(cost_center=app.cost_center),
        "my_app": make_report("compliance", application=app),
        "theirs": make_report(cost_center=other_app.cost_center),
        "their_app": make_report("compliance", application=other_app),
    }


def test_owner_sees_the_reports_of_their_cost_centres_and_applications(client, owner, estate):
    client.force_login(owner)

    response = client.get(reverse("reports:report-list"))

    assert response.status_code == 200
    assert listed(response) == {estate["mine"].pk, estate["my_app"].pk}


def test_backup_team_sees_every_report(client, backup_admin, estate):
    client.force_login(backup_admin)

    assert listed(client.get(reverse("reports:report-list"))) == {report.pk for report in estate.values()}


def test_owner_downloads_their_report(client, owner, estate):
    client.force_login(owner)

    response = client.get(reverse("reports:download", args=[estate["mine"].pk]))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"%PDF-1.7 test"
    assert response["Content-Type"] == "application/pdf"
    assert 'filename="chargeback-2026-10-' in response["Content-Disposition"]


@pytest.mark.parametrize("name", ["theirs", "their_app", "company"])
def test_another_tenants_report_is_a_404(client, owner, estate, name):
    client.force_login(owner)

    assert client.get(reverse("reports:download", args=[estate[name].pk])).status_code == 404


def test_anonymous_visitors_are_sent_to_sign_in(client, estate):
    response = client.get(reverse("reports:download", args=[estate["mine"].pk]))

    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_a_report_whose_file_is_gone_is_a_404(client, backup_admin, estate):
    estate["company"].file.delete(save=False)
    client.force_login(backup_admin)

    assert client.get(reverse("reports:download", args=[estate["company"].pk])).status_code == 404


def test_filter_by_kind_and_month(client, backup_admin, estate):
    client.force_login(backup_admin)

    compliance = client.get(reverse("reports:report-list"), {"kind": "compliance", "month": "2026-10"})
    other_month = client.get(reverse("reports:report-list"), {"month": "2026-09"})

    assert listed(compliance) == {estate["my_app"].pk, estate["their_app"].pk}
    assert listed(other_month) == set()


def test_the_list_costs_the_same_queries_for_more_reports(client, backup_admin, estate):
    client.force_login(backup_admin)
    url = reverse("reports:report-list")
    client.get(url)  # warm up: session, user, group
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for _ in range(10):
        make_report(cost_center=factories.CostCenterFactory())
    with CaptureQueriesContext(connection) as many:
        client.get(url)

    assert len(many) == len(few)
