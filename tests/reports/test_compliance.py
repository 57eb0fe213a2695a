"""Compliance figures against the hand-computed estate (``builders.ComplianceEstate``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from catalog.choices import BackupStatus
from reports import builders
from tests.reports.builders import OCTOBER, at, backup

pytestmark = pytest.mark.django_db

NOW = at(11, 26)


def lines_by_client(report):
    return {line.client: line for line in report.lines}


def test_share_of_days_the_rpo_was_met(compliance_estate):
    lines = lines_by_client(builders.build("compliance", OCTOBER, now=NOW))

    assert (lines["daily"].days_met, lines["daily"].days_measured) == (29, 31)
    assert round(lines["daily"].rpo_share, 1) == 93.5
    assert (lines["hourly"].days_met, lines["hourly"].days_measured) == (31, 31)
    assert (lines["new"].days_met, lines["new"].days_measured) == (11, 11)


def test_age_of_the_last_good_backup_at_month_end(compliance_estate):
    lines = lines_by_client(builders.build("compliance", OCTOBER, now=NOW))

    assert lines["daily"].last_good_at == at(10, 31, 1)
    assert lines["daily"].age == timedelta(hours=23)
    # The 23:00 backup failed its restore test: it is not a good one.
    assert lines["hourly"].last_good_at == at(10, 31, 20)
    assert lines["hourly"].rpo_met_at_end


def test_restore_tests_failed_backups_and_open_critical_alerts(compliance_estate):
    lines = lines_by_client(builders.build("compliance", OCTOBER, now=NOW))

    daily, hourly, new = lines["daily"], lines["hourly"], lines["new"]
    assert (daily.test_status, daily.last_test_at, daily.last_test_passed) == (
        "failed",
        at(10, 15, 12),
        False,
    )
    assert (hourly.test_status, hourly.last_test_duration) == ("passed", timedelta(minutes=10))
    assert new.test_status == "not yet due"
    assert (daily.failed_backups, hourly.failed_backups) == (2, 0)
    assert (daily.open_critical_alerts, hourly.open_critical_alerts) == (1, 0)


def test_overall_compliance_and_the_exceptions_list(compliance_estate):
    report = builders.build("compliance", OCTOBER, now=NOW)

    assert (report.compliant, report.clients) == (2, 3)
    assert round(report.compliance_pct, 1) == 66.7
    assert report.not_measured == 1
    (exception,) = report.exceptions
    assert exception.client == "daily"
    assert exception.reasons == ["RPO met on 29 of 31 days", "last restore test failed (15 Oct)"]


def test_retention_honoured_unless_a_backup_went_before_its_expiry(compliance_estate):
    assert builders.build("compliance", OCTOBER, now=NOW).retention_violations == 0

    # The database refuses status=deleted before expiry; a row deleted early otherwise is still caught.
    backup(compliance_estate.hourly, at(9, 15), 1, status=BackupStatus.EXPIRED, deleted_at=at(10, 3),
           expires_at=at(10, 15))  # fmt: skip
    report = builders.build("compliance", OCTOBER, now=NOW)

    line = lines_by_client(report)["hourly"]
    assert line.retention_violations == 1
    assert not line.compliant
    assert "1 deleted before expiry" in line.reasons
