"""Chargeback figures against the hand-computed estate (``builders.ChargebackEstate``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from reports import builders
from reports.periods import Month
from tests.reports.builders import OCTOBER, at

pytestmark = pytest.mark.django_db

NOW = at(11, 26)


def lines_by_client(report):
    return {line.client: line for line in report.lines}


def test_gb_months_count_the_days_each_backup_was_held(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    lines = lines_by_client(report)
    assert lines["orders-db"].gb_months == Decimal("142.00")
    assert lines["files"].gb_months == Decimal("31.00")
    assert lines["hr-db"].gb_months == Decimal("2.00")


def test_amounts_bill_a_price_change_day_by_day(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    lines = lines_by_client(report)
    assert lines["orders-db"].amount == Decimal("7.10")
    assert lines["files"].amount == Decimal("4.68")  # 15 days at 0.12, 16 days at 0.18
    assert lines["files"].price == Decimal("0.18")
    assert "0.12" in lines["files"].price_note and "0.18" in lines["files"].price_note
    assert lines["hr-db"].amount == Decimal("0.10")
    assert [(c.policy, c.day, c.old, c.new) for c in report.price_changes] == [
        ("Gold", at(10, 16).date(), Decimal("0.1200"), Decimal("0.1800"))
    ]


def test_totals_add_up_the_client_lines_and_compare_with_last_month(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    assert report.totals.amount == Decimal("11.88")
    assert report.totals.previous_amount == Decimal("5.55")
    assert report.totals.change == Decimal("6.33")
    centres = {c.code: c.totals for c in report.cost_centers}
    assert centres["CC-1"].amount == Decimal("11.78")
    assert centres["CC-2"].amount == Decimal("0.10")
    assert report.trend[-1] == (OCTOBER, Decimal("11.88"))
    assert report.trend[-2] == (OCTOBER.previous(), Decimal("5.55"))
    assert len(report.trend) == 6


def test_protected_size_backups_and_restores(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    line = lines_by_client(report)["orders-db"]
    assert line.protected_bytes == 80 * 10**9
    assert line.backups == 2
    assert line.restores == 1
    assert line.previous_amount == Decimal("1.83")
    assert line.change == Decimal("5.27")


def test_a_cost_centre_report_holds_its_own_clients_only(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, cost_center=chargeback_estate.corporate, now=NOW)

    assert [line.client for line in report.lines] == ["hr-db"]
    assert report.totals.amount == Decimal("0.10")


def test_february_has_28_days(app, silver):
    from tests import factories
    from tests.reports.builders import backup

    client = factories.BackupClientFactory(application=app, name="feb", policy=silver)
    backup(client, at(2, 1), 28, deleted=at(2, 15))  # 14 of 28 days → 14 GB-months
    backup(client, at(1, 31), 56)  # all of February → 56 GB-months

    report = builders.build("chargeback", Month(2026, 2), now=NOW)

    (line,) = report.lines
    assert line.gb_months == Decimal("70.00")
    assert line.amount == Decimal("3.50")
