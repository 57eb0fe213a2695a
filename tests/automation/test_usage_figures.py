"""The real fleet's cost beside the human actions: portal CPU seconds and database commits per 1,000 jobs.

core.usage records them by hour (tests/core/test_usage.py); here they are read by week, divided by the
jobs run, and shown on the admin's Automation page and the dashboard panel.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.choices import JobState
from core.models import PortalUsage
from requests_app import metrics
from tests import factories

pytestmark = pytest.mark.django_db

ADMIN_PAGE = "/admin/automation/"
POSTGRESQL = connection.vendor == "postgresql"


def monday(weeks_ago: int) -> date:
    return metrics.week_start(timezone.now()) - timedelta(weeks=weeks_ago)


def moment(day: date, hour: int = 12) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hour)))


def jobs_run(app, day: date, count: int) -> None:
    client = factories.BackupClientFactory(application=app)
    for _ in range(count):
        factories.JobFactory(client=client, state=JobState.SUCCEEDED, finished_at=moment(day))


def used(day: date, hour: int, *, cpu: float | None = None, commits: int | None = None) -> None:
    PortalUsage.objects.create(
        hour=moment(day, hour).astimezone(UTC).replace(minute=0), cpu_seconds=cpu, db_commits=commits
    )


def row(page: str, start: date) -> list[str]:
    """The cells of the table row of the week that starts on ``start``, as text."""
    label = f"{start.day} {start:%b} – "
    (tr,) = [tr for tr in re.findall(r"<tr[^>]*>.*?</tr>", page, re.S) if label in tr]
    return [re.sub(r"<[^>]+>|\s+", " ", td).strip() for td in re.findall(r"<td[^>]*>.*?</td>", tr, re.S)]


CPU_CELL, COMMITS_CELL = 4, 5  # after week, jobs run, human actions, per 1,000 jobs


def test_the_page_shows_cpu_and_commits_per_thousand_jobs_for_a_week_with_jobs(client, backup_admin, app):
    last_week = monday(1)
    jobs_run(app, last_week + timedelta(days=2), 4)
    used(last_week, 9, cpu=2.0, commits=150)
    used(last_week + timedelta(days=3), 14, cpu=1.0, commits=50)
    client.force_login(backup_admin)

    response = client.get(ADMIN_PAGE)

    week = response.context["automation"].last_full_week
    assert week.cpu_seconds_per_thousand_jobs == 750.0  # 3 CPU seconds × 1000 / 4 jobs
    assert week.commits_per_thousand_jobs == 50_000.0  # 200 commits × 1000 / 4 jobs
    page = response.content.decode()
    assert "Portal CPU (s) per 1,000 jobs" in page
    assert "DB commits per 1,000 jobs" in page
    cells = row(page, last_week)
    assert cells[CPU_CELL] == "750"
    if POSTGRESQL:
        assert cells[COMMITS_CELL] == "50,000"
        assert "not measured on SQLite" not in page
    else:
        assert cells[COMMITS_CELL] == "—"  # SQLite keeps no commit counter: whatever the rows say
        assert "Not measured on SQLite" in page
    # The definitions say what they are and that they are all of the portal's work.
    assert "polls and reports, pages, the API, and every task" in " ".join(page.split())


def test_a_week_without_measurements_or_without_jobs_shows_a_dash(client, backup_admin, app):
    jobs_run(app, monday(1) + timedelta(days=1), 3)  # jobs, nothing metered (before the meter ran)
    used(monday(2), 10, cpu=5.0, commits=500)  # metered, no job ran
    used(monday(1), 10, commits=80)  # CPU not metered, commits sampled
    client.force_login(backup_admin)

    response = client.get(ADMIN_PAGE)

    page = response.content.decode()
    assert row(page, monday(1))[CPU_CELL] == "—"
    assert row(page, monday(2))[CPU_CELL] == "—"
    assert row(page, monday(2))[COMMITS_CELL] == "—"
    assert row(page, monday(3))[CPU_CELL] == "—"  # nothing at all
    weeks = {week.start: week for week in response.context["automation"].weeks}
    assert weeks[monday(1)].cpu_seconds_per_thousand_jobs is None
    assert weeks[monday(2)].cpu_seconds_per_thousand_jobs is None
    assert weeks[monday(1)].commits_per_thousand_jobs == pytest.approx(80 * 1000 / 3)


def test_the_page_costs_the_same_queries_with_more_weeks_of_data(client, backup_admin, app):
    client.force_login(backup_admin)
    jobs_run(app, monday(1), 2)
    used(monday(1), 8, cpu=1.0, commits=10)
    with CaptureQueriesContext(connection) as one_week:
        assert client.get(ADMIN_PAGE).status_code == 200
    for weeks_ago in range(12):  # every week shown, and some older than the page
        jobs_run(app, monday(weeks_ago) + timedelta(days=1), 3)
        for hour in (9, 13, 17):
            used(monday(weeks_ago) + timedelta(days=2), hour, cpu=0.5, commits=40)
    with CaptureQueriesContext(connection) as many_weeks:
        response = client.get(ADMIN_PAGE)
    assert len(one_week) == len(many_weeks)
    assert response.context["automation"].last_full_week.cpu_seconds_per_thousand_jobs == pytest.approx(
        1.5 * 1000 / 3
    )


def test_the_dashboard_panel_shows_the_same_columns(client, backup_admin, app):
    jobs_run(app, monday(1) + timedelta(days=1), 2)
    used(monday(1), 10, cpu=0.5)
    client.force_login(backup_admin)
    page = client.get("/").content.decode()
    assert "Portal CPU (s) per 1,000 jobs" in page
    assert row(page, monday(1))[CPU_CELL] == "250"
    assert ("commits not measured on SQLite" in page) is not POSTGRESQL


# --- requests_app.metrics ---------------------------------------------------------------------------------

NOW = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)  # a Wednesday; the last full week is 3–9 March


def test_hours_are_summed_into_their_iso_week(app):
    jobs_run(app, date(2025, 3, 5), 2)
    PortalUsage.objects.create(hour=datetime(2025, 3, 3, 0, tzinfo=UTC), cpu_seconds=1.0, db_commits=10)
    PortalUsage.objects.create(hour=datetime(2025, 3, 9, 23, tzinfo=UTC), cpu_seconds=2.0)
    PortalUsage.objects.create(hour=datetime(2025, 3, 10, 0, tzinfo=UTC), cpu_seconds=4.0, db_commits=5)
    PortalUsage.objects.create(hour=datetime(2025, 3, 2, 23, tzinfo=UTC), cpu_seconds=8.0)

    weeks = {week.start: week for week in metrics.weekly(now=NOW).weeks}

    last = weeks[date(2025, 3, 3)]
    assert (last.portal_cpu_seconds, last.database_commits) == (3.0, 10)
    assert (last.cpu_seconds_per_thousand_jobs, last.commits_per_thousand_jobs) == (1500.0, 5000.0)
    current = weeks[date(2025, 3, 10)]
    assert (current.portal_cpu_seconds, current.cpu_seconds_per_thousand_jobs) == (4.0, None)  # no job yet
    assert weeks[date(2025, 2, 24)].portal_cpu_seconds == 8.0


def test_the_figures_cost_one_query_for_all_weeks(app):
    with CaptureQueriesContext(connection) as two_weeks:
        metrics.weekly(weeks=2, now=NOW)
    for n in range(26):
        PortalUsage.objects.create(hour=NOW - timedelta(weeks=n, hours=1), cpu_seconds=1.0, db_commits=3)
    with CaptureQueriesContext(connection) as half_a_year:
        automation = metrics.weekly(weeks=26, now=NOW)
    assert len(two_weeks) == len(half_a_year) == 5
    assert all(week.portal_cpu_seconds == 1.0 for week in automation.weeks)
    assert automation.commits_measured is POSTGRESQL
