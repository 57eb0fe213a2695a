"""Operations figures against the hand-computed estate (``builders.OperationsEstate``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reports import builders
from tests.reports.builders import GB, OCTOBER, at

pytestmark = pytest.mark.django_db

NOW = at(11, 26)


def test_jobs_run_success_rate_and_failures_by_class(operations_estate):
    report = builders.build("operations", OCTOBER, now=NOW)

    total = report.total
    assert (total.run, total.succeeded, total.failed, total.cancelled) == (20, 14, 5, 1)
    assert round(total.success_rate, 2) == 73.68
    kinds = {kind.label: (kind.run, kind.failed) for kind in report.kinds}
    assert kinds == {"Backup": (13, 4), "Restore": (4, 0), "Restore test": (2, 1), "Expire": (1, 0)}
    assert dict(report.failures_by_class) == {
        "Permission denied": 2,
        "Timeout": 2,
        "Agent stopped reporting (lease expired)": 1,
    }
    assert report.retries_recovered == 2
    (line,) = report.lines
    assert line.restore_tests_failed == 0  # the vanished agent gave no verdict


def test_requests_time_to_restore_and_human_actions(operations_estate):
    report = builders.build("operations", OCTOBER, now=NOW)

    assert report.restores_completed == 3
    assert report.median_time_to_restore == timedelta(hours=1)
    assert (report.work.approved_by_system, report.work.approved_by_person) == (1, 1)
    assert report.approved_by_system_pct == 50.0
    assert report.work.human_actions == 3
    assert report.work.per_thousand_jobs == 150.0


def test_silent_agents_and_storage_growth(operations_estate):
    report = builders.build("operations", OCTOBER, now=NOW)

    (agent,) = report.silent_agents
    assert (agent.hostname, agent.alerts, agent.open_at_end) == ("quiet.example.com", 2, True)
    assert agent.silent == timedelta(days=12, hours=2)
    (target,) = report.storage
    assert (target.name, target.used_bytes, target.used_before_bytes) == ("vault", 150 * GB, 130 * GB)
    assert target.growth_bytes == 20 * GB
    assert round(target.growth_pct, 1) == 15.4
    assert target.fill_pct == 15.0


def test_daily_series_covers_every_day_of_the_month(operations_estate):
    report = builders.build("operations", OCTOBER, now=NOW)

    assert len(report.daily) == 31
    assert sum(run for _, run, _ in report.daily) == 20
    assert {day.day: failed for day, _, failed in report.daily}[14] == 1


def test_a_scoped_report_leaves_people_work_to_the_company_edition(operations_estate, other_app):
    report = builders.build("operations", OCTOBER, application=other_app, now=NOW)

    assert report.total.run == 0
    assert report.work is None
