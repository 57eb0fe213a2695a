"""Months: parsing, boundaries and lengths."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reports.periods import Month


def test_parse_and_print():
    month = Month.parse("2026-10")

    assert (month.year, month.month) == (2026, 10)
    assert str(month) == "2026-10"
    assert month.label == "October 2026"


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "October", "", "2026-10-01", "0000-05"])
def test_parse_refuses_what_is_not_a_month(text):
    with pytest.raises(ValueError):
        Month.parse(text)


def test_bounds_in_utc():
    october = Month(2026, 10)

    assert october.start == datetime(2026, 10, 1, tzinfo=UTC)
    assert october.end == datetime(2026, 11, 1, tzinfo=UTC)
    assert october.seconds == 31 * 86400


@pytest.mark.parametrize(
    ("month", "days"), [("2026-02", 28), ("2028-02", 29), ("2026-10", 31), ("2026-11", 30)]
)
def test_days_in_month(month, days):
    assert Month.parse(month).days_in_month == days


def test_neighbours_across_the_year():
    assert Month(2026, 1).previous() == Month(2025, 12)
    assert Month(2026, 12).next() == Month(2027, 1)
    assert Month(2026, 10).shifted(-5) == Month(2026, 5)


def test_the_month_in_progress_stops_at_now():
    now = datetime(2026, 11, 26, 5, tzinfo=UTC)

    assert Month(2026, 11).as_of(now) == now
    assert Month(2026, 10).as_of(now) == Month(2026, 10).end
    assert Month.last_completed(now) == Month(2026, 10)
