"""Reports in the admin: view-only rows with a download link, and "Regenerate"."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from reports import delivery
from reports.models import PolicyPrice, Report
from tests.reports.builders import OCTOBER

pytestmark = pytest.mark.django_db


def test_changelist_lists_reports_with_their_download_link(client, backup_admin, chargeback_estate):
    report = delivery.generate("chargeback", OCTOBER, formats=("csv",))["csv"]
    client.force_login(backup_admin)

    response = client.get(reverse("admin:reports_report_changelist"))

    assert response.status_code == 200
    assert reverse("reports:download", args=[report.pk]).encode() in response.content


def test_regenerate_action_rebuilds_the_report(
    client, backup_admin, chargeback_estate, django_capture_on_commit_callbacks
):
    report = delivery.generate("chargeback", OCTOBER, formats=("csv",))["csv"]
    Report.objects.filter(pk=report.pk).update(summary={})
    client.force_login(backup_admin)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:reports_report_changelist"),
            {"action": "regenerate", "_selected_action": [report.pk]},
        )

    assert response.status_code == 302
    report.refresh_from_db()
    assert report.summary["amount"] == "11.88"
    assert report.generated_by == backup_admin


def test_owners_cannot_open_the_reports_admin(client, owner):
    owner.is_staff = True
    owner.save()
    client.force_login(owner)

    assert client.get(reverse("admin:reports_report_changelist")).status_code == 403


def test_backup_team_records_a_price_change_in_advance(client, backup_admin, gold):
    client.force_login(backup_admin)

    response = client.post(
        reverse("admin:reports_policyprice_add"),
        {
            "policy": gold.pk,
            "effective_from": "2026-12-01",
            "price_per_gb_month": "0.1500",
            "note": "2027 price list",
        },
    )

    assert response.status_code == 302
    assert PolicyPrice.objects.get().price_per_gb_month == Decimal("0.1500")


def test_a_reports_page_shows_the_applications_it_covers(client, backup_admin, chargeback_estate, app):
    report = delivery.generate("chargeback", OCTOBER, formats=("csv",), cost_center=chargeback_estate.retail)[
        "csv"
    ]
    client.force_login(backup_admin)

    response = client.get(reverse("admin:reports_report_change", args=[report.pk]))

    assert response.status_code == 200
    assert app.name.encode() in response.content
