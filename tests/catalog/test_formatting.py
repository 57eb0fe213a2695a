"""Sizes, durations and ages as people read them on pages and in reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from catalog.formatting import human_age, human_duration, human_size

KiB, MiB, GiB, TiB, PiB = (1024**n for n in range(1, 6))


@pytest.mark.parametrize(
    ("num_bytes", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (KiB, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1023 * KiB, "1023.0 KiB"),
        (MiB, "1.0 MiB"),
        (int(2.5 * GiB), "2.5 GiB"),
        (TiB, "1.0 TiB"),
        (PiB, "1.0 PiB"),
        (2048 * PiB, "2048.0 PiB"),  # no unit above PiB: the number grows instead
        (-2 * KiB, "-2.0 KiB"),  # a shrinking target reports a negative delta
    ],
)
def test_human_size(num_bytes, expected):
    assert human_size(num_bytes) == expected


def test_unknown_size_is_a_dash():
    assert human_size(None) == "—"


@pytest.mark.parametrize(
    ("num_bytes", "expected"),
    [(MiB - 1, "1.0 MiB"), (GiB - 1, "1.0 GiB"), (KiB * 1023.96, "1.0 MiB")],
    ids=["just-under-MiB", "just-under-GiB", "rounds-up-to-MiB"],
)
def test_size_just_under_a_unit_is_shown_in_the_next_unit(num_bytes, expected):
    """Never "1024.0 KiB": a value that rounds to 1024 of a unit is one of the next."""
    assert human_size(int(num_bytes)) == expected


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=59.9), "59s"),
        (timedelta(seconds=60), "1m 00s"),
        (timedelta(minutes=59, seconds=59), "59m 59s"),
        (timedelta(hours=1), "1h 00m"),
        (timedelta(hours=23, minutes=59, seconds=59), "23h 59m"),
        (timedelta(days=1), "1d 0h"),
        (timedelta(days=400, hours=5), "400d 5h"),
        (timedelta(milliseconds=-400), "0s"),  # clock jitter below a second is not "future"
    ],
)
def test_human_duration(delta, expected):
    assert human_duration(delta) == expected


@pytest.mark.parametrize("delta", [timedelta(seconds=-1), timedelta(days=-3)])
def test_negative_duration_is_in_the_future(delta):
    assert human_duration(delta) == "in the future"


def test_unknown_duration_is_a_dash():
    assert human_duration(None) == "—"


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_age_counts_back_from_now():
    assert human_age(NOW - timedelta(hours=3, minutes=5), now=NOW) == "3h 05m ago"
    assert human_age(NOW, now=NOW) == "0s ago"


def test_age_defaults_to_the_current_time():
    assert human_age(datetime.now(UTC) - timedelta(days=2, hours=1)) == "2d 1h ago"


def test_age_of_something_that_never_happened():
    assert human_age(None) == "never"


def test_age_of_a_moment_in_the_future_is_not_an_age():
    """An agent whose clock runs ahead reports a backup taken "in 5 minutes"."""
    assert human_age(NOW + timedelta(minutes=5), now=NOW) == "in the future"
