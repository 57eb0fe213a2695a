"""reports 0002: the reports made before it get the applications they are known to cover, and no more."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests import factories

BEFORE = [("reports", "0001_initial")]
AFTER = [("reports", "0002_report_applications")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_application_reports_record_their_application_and_cost_centre_reports_nothing():
    application = factories.ApplicationFactory()
    old = migrate(BEFORE)
    Report = old.get_model("reports", "Report")
    own = Report.objects.create(
        kind="chargeback", month="2026-10-01", format="csv", application_id=application.pk
    )
    center = Report.objects.create(
        kind="chargeback", month="2026-10-01", format="csv", cost_center_id=application.cost_center_id
    )
    company = Report.objects.create(kind="chargeback", month="2026-10-01", format="csv")

    new = migrate(AFTER)

    covered = new.get_model("reports", "ReportApplication").objects.values_list("report_id", "application_id")
    assert list(covered) == [(own.pk, application.pk)]
    assert {center.pk, company.pk}.isdisjoint(report for report, _ in covered)
