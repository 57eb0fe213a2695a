"""Capacity forecast against synthetic histories whose answer is worked out on paper.

Backups are taken at 00:30 every day; the forecast runs at 06:00 on day 0 (``NOW``), so
today's backup is already stored. A backup taken on day j with retention r leaves on day
j + r. 1 GB = 10^9 bytes, 1 TB = 10^12.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.choices import BackupStatus
from catalog.models import StorageTarget
from catalog.services import capacity
from tests import factories

pytestmark = pytest.mark.django_db

GB, TB = 10**9, 10**12
NOW = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
TODAY = NOW.date()


def taken(day: int) -> datetime:
    midnight = datetime.combine(TODAY + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
    return midnight + timedelta(minutes=30)


def target(capacity_bytes: int, name: str = "backup-nfs-1") -> StorageTarget:
    return factories.StorageTargetFactory(name=name, capacity_bytes=capacity_bytes)


def client_on(storage: StorageTarget):
    return factories.BackupClientFactory(policy=factories.ProtectionPolicyFactory(storage_target=storage))


def backup(client, day: int, stored: float, *, retention: int = 30, **fields):
    """A backup taken on ``day``; one already past retention was swept and removed (deleted)."""
    if taken(day) + timedelta(days=retention) <= NOW and "status" not in fields:
        fields.update(status=BackupStatus.DELETED, deleted_at=taken(day) + timedelta(days=retention))
    return factories.BackupFactory(
        client=client,
        taken_at=taken(day),
        expires_at=taken(day) + timedelta(days=retention),
        stored_size_bytes=int(stored),
        size_bytes=int(stored),
        **fields,
    )


def history(client, days: int, per_day=lambda day: 100 * GB, *, retention: int = 30):
    """One backup a day from day −days to day 0 (today), ``per_day(day)`` bytes each."""
    for day in range(-days, 1):
        backup(client, day, per_day(day), retention=retention)


# --- Steady arrivals: the level-off ----------------------------------------------------------------


def test_steady_arrivals_level_off_and_fill_a_small_target_on_the_computed_day():
    """100 GB/day kept 30 days levels off at 3.0 TB. 21 backups held now (days −20…0): 2.1 TB;
    2.1 + 0.1 d ≥ 2.45 first on d = 4."""
    storage = target(int(2.45 * TB))
    history(client_on(storage), 20)

    result = capacity.forecast(storage, now=NOW)

    assert result.used_bytes == 2100 * GB
    assert result.basis_days == 20
    assert result.arrival_trend_bytes_per_day == 0
    assert result.retention_days == 30
    assert result.days_until_full == 4.0
    assert result.full_on == TODAY + timedelta(days=4)
    assert result.horizon_bytes == 3 * TB  # the plateau: 100 GB/day × 30 days
    assert result.reason == ""


def test_steady_arrivals_never_fill_a_target_above_the_plateau():
    storage = target(4 * TB)
    history(client_on(storage), 20)

    result = capacity.forecast(storage, now=NOW)

    assert (result.full_on, result.days_until_full) == (None, None)
    assert result.horizon_bytes == 3 * TB
    assert result.summary == "not within 2 years"
    # Next 30 days: 3000 GB arrive (tomorrow's leave from day 31 on); days −20…0 leave on days
    # 10…30 (2100 GB): net +900 GB, 30 GB/day.
    assert result.arriving_bytes_per_day == pytest.approx(100 * GB)
    assert result.expiring_bytes_per_day == pytest.approx(2100 * GB / 30)
    assert result.growth_bytes_per_day == pytest.approx(900 * GB / 30)


# --- Growing arrivals ------------------------------------------------------------------------------------


def test_linearly_growing_arrivals_fill_on_the_closed_form_day():
    """Arrivals a(j) = 100 GB + 2 GB·j (every day since long ago), kept 30 days: held at the end of day
    d = Σ a(j) for j = d−29 … d = 30·100 GB + 2 GB·(30 d − 435). Capacity 4 TB: d ≥ 1000/60 + 14.5 = 31.2,
    so day 32."""
    storage = target(4 * TB)
    history(client_on(storage), 40, per_day=lambda day: 100 * GB + 2 * GB * day)

    result = capacity.forecast(storage, now=NOW)

    assert result.arrival_trend_bytes_per_day == pytest.approx(2 * GB)
    held = lambda d: 30 * 100 * GB + 2 * GB * (30 * d - 435)  # noqa: E731
    assert result.used_bytes == pytest.approx(held(0))
    expected = next(d for d in range(1, 400) if held(d) >= 4 * TB)
    assert expected == 32
    assert result.days_until_full == expected  # exact: the weekly averages of a line lie on it
    assert result.full_on == TODAY + timedelta(days=32)
    assert result.arrival_level_bytes_per_day == pytest.approx(100 * GB + 2 * GB * -4)  # days −7…−1


def test_a_step_change_in_arrivals_is_a_new_level_not_growth():
    """A second client onboarded 20 days ago (day −19) doubled arrivals: 200 GB/day kept 30 days levels
    off at 6 TB. Held now: 30 × 100 GB of the first client + 20 × 100 GB of the second = 5 TB; the first
    one's oldest leave from day 1, so + 100 GB a day until day 10, then flat at 6 TB. A 7 TB target is
    never full (a line through the step would have it full within weeks)."""
    storage = target(7 * TB)
    history(client_on(storage), 40)
    onboarded = client_on(storage)
    for day in range(-19, 1):
        backup(onboarded, day, 100 * GB)

    result = capacity.forecast(storage, now=NOW)

    assert result.used_bytes == 5 * TB
    assert result.arrival_level_bytes_per_day == pytest.approx(200 * GB)
    assert result.arrival_trend_bytes_per_day == 0
    assert (result.full_on, result.days_until_full) == (None, None)
    assert result.horizon_bytes == 6 * TB
    assert result.arriving_bytes_per_day == pytest.approx(200 * GB)


def test_growth_after_a_step_is_still_growth():
    """The trend needs both halves of the window to rise alike: a line does, a step does not."""
    line = [(float(x), 100.0 + 2.0 * x) for x in range(-28, 0)]
    step = [(float(x), 100.0 if x < -14 else 200.0) for x in range(-28, 0)]
    bent = [(float(x), 100.0 + (0.5 if x < -14 else 5.0) * x) for x in range(-28, 0)]

    assert capacity.trend(line) == 2.0
    assert capacity.trend(step) == 0.0
    assert capacity.trend(bent) == 0.0  # halves disagree more than TREND_AGREEMENT: no slope trusted


def test_a_weekly_full_with_daily_incrementals_is_read_at_its_weekly_average():
    """700 GB fulls on Sundays and 10 GB incrementals in between: 760 GB a week, 108.6 GB a day, no trend."""
    storage = target(100 * TB)
    history(client_on(storage), 40, per_day=lambda day: 700 * GB if day % 7 == 0 else 10 * GB)

    result = capacity.forecast(storage, now=NOW)

    assert result.arrival_trend_bytes_per_day == 0
    assert result.arriving_bytes_per_day == pytest.approx(760 * GB / 7)


def test_a_one_off_big_backup_does_not_bend_the_trend():
    """Theil–Sen: one 2 TB import among 100 GB days changes neither the slope nor the level."""
    storage = target(10 * TB)
    history(client_on(storage), 28, per_day=lambda day: 2 * TB if day == -14 else 100 * GB)

    result = capacity.forecast(storage, now=NOW)

    assert result.arrival_trend_bytes_per_day == 0
    assert result.arriving_bytes_per_day == pytest.approx(100 * GB)


# --- Scheduled expiries, legal hold, chains ------------------------------------------------------------


def big_expiry_estate(**fields) -> StorageTarget:
    """100 GB/day kept 60 days since day −40 (4.1 TB, + 0.1 TB a day until day 19) plus 1 TB taken
    long ago that expires on day 7. Capacity 5.85 TB."""
    storage = target(int(5.85 * TB))
    client = client_on(storage)
    history(client, 40, retention=60)
    backup(client, -200, 1 * TB, retention=207, **fields)
    return storage


def test_a_big_expiry_next_week_delays_the_full_date():
    """Day 7: 4.1 + 0.7 = 4.8 TB once the 1 TB left; then 4.1 + 0.1 d ≥ 5.85 on day 18."""
    result = capacity.forecast(big_expiry_estate(), now=NOW)

    assert result.used_bytes == 5100 * GB
    assert result.full_on == TODAY + timedelta(days=18)


def test_legal_hold_keeps_the_bytes():
    """Held, the 1 TB never leaves: 5.1 + 0.1 d ≥ 5.85 on day 8."""
    result = capacity.forecast(big_expiry_estate(legal_hold=True, legal_hold_reason="case 7"), now=NOW)

    assert result.held_bytes == 1 * TB
    assert result.full_on == TODAY + timedelta(days=8)


def test_a_chain_base_waits_for_its_last_dependent():
    """A 1 TB full due on day 2 with an incremental due on day 9 leaves with it, on day 9.
    Capacity 5.85 TB on the 60-day history: with the full gone on day 2 the target would fill on day 18;
    held to day 9 it is 5.1 + 0.1 d ≥ 5.85 on day 8, before it goes."""
    storage = target(int(5.85 * TB))
    client = client_on(storage)
    history(client, 40, retention=60)
    full = backup(client, -200, 1 * TB, retention=202)
    backup(client, -199, 0, retention=208, level="incremental", base=full, full=full)

    assert capacity.forecast(storage, now=NOW).full_on == TODAY + timedelta(days=8)


def test_a_hold_on_an_incremental_keeps_its_base_too():
    """The full (1 TB, due day 7) is needed by a held incremental: it stays, as with a hold on itself."""
    storage = target(int(5.85 * TB))
    client = client_on(storage)
    history(client, 40, retention=60)
    full = backup(client, -200, 1 * TB, retention=207)
    backup(client, -199, 0, retention=208, level="incremental", base=full, full=full,
           legal_hold=True, legal_hold_reason="case 7")  # fmt: skip

    result = capacity.forecast(storage, now=NOW)

    assert result.held_bytes == 1 * TB
    assert result.full_on == TODAY + timedelta(days=8)


def test_expired_backups_not_yet_removed_count_now_and_leave_tomorrow():
    storage = target(10 * TB)
    client = client_on(storage)
    history(client, 10)
    backup(client, -40, 5 * TB, status=BackupStatus.EXPIRED)

    result = capacity.forecast(storage, now=NOW)

    assert result.used_bytes == 6100 * GB
    assert result.expiring_bytes_per_day >= 5 * TB / 30


def test_a_target_already_full_is_full_today():
    storage = target(1 * TB)
    history(client_on(storage), 20)

    result = capacity.forecast(storage, now=NOW)

    assert (result.days_until_full, result.full_on, result.summary) == (0.0, TODAY, "full now")


# --- Not enough history ------------------------------------------------------------------------------


def test_no_history_gives_no_date_and_says_why():
    storage = target(1 * TB)

    result = capacity.forecast(storage, now=NOW)

    assert (result.full_on, result.days_until_full, result.used_bytes) == (None, None, 0)
    assert result.reason == "no backup stored yet"


def test_a_target_whose_first_backup_is_today_has_no_history_yet():
    storage = target(1 * TB)
    backup(client_on(storage), 0, 100 * GB)

    result = capacity.forecast(storage, now=NOW)

    assert (result.used_bytes, result.full_on) == (100 * GB, None)
    assert result.reason == "only 0 days of history; a forecast needs 14"


def test_a_few_days_of_history_are_not_a_trend():
    storage = target(1 * TB)
    history(client_on(storage), 3)

    result = capacity.forecast(storage, now=NOW)

    assert result.full_on is None
    assert result.basis_days == 3
    assert result.reason == "only 3 days of history; a forecast needs 14"


# --- Cost ---------------------------------------------------------------------------------------------


def estate_of(n: int) -> None:
    for index in range(n):
        client = client_on(target(4 * TB, name=f"t{index:02}"))
        for day in (-9, -5, -1, 0):
            backup(client, day, 100 * GB)


@pytest.mark.parametrize("targets", [1, 20])
def test_forecast_all_costs_the_same_queries_for_1_or_20_targets(targets):
    estate_of(targets)

    with CaptureQueriesContext(connection) as queries:
        results = capacity.forecast_all(now=NOW)

    assert len(results) == targets
    assert [r.target_name for r in results] == sorted(r.target_name for r in results)
    assert len(queries) == capacity.QUERIES


def test_theil_sen_recovers_a_line_through_an_outlier():
    points = [(float(x), 10.0 + 3.0 * x) for x in range(10)]
    points[4] = (4.0, 1000.0)

    assert capacity.theil_sen(points) == (10.0, 3.0)


def test_full_on_is_a_date():
    storage = target(int(2.45 * TB))
    history(client_on(storage), 20)

    assert isinstance(capacity.forecast(storage, now=NOW).full_on, date)
