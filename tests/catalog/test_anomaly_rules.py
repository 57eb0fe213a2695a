"""The statistic and the thresholds (catalog/anomaly.py) on synthetic histories, without the database.

Each history is judged point by point, as the portal does after every backup: the verdicts of
all points are collected and the test says which (if any) fired.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

from catalog import anomaly
from catalog.anomaly import Point

GB = 1 << 30
START = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)  # a Monday


def day(n: int) -> datetime:
    return START + timedelta(days=n)


def noisy(rng: random.Random, value: float, spread: float = 0.02) -> int:
    return int(value * (1 + rng.uniform(-spread, spread)))


def normal_point(rng: random.Random, n: int, size: float, entries: int, **extra) -> Point:
    changed = noisy(rng, entries * 0.012, 0.3)
    new = noisy(rng, entries * 0.004, 0.3)
    deleted = noisy(rng, entries * 0.002, 0.3)
    fields = {"entries": entries, "new": new, "changed": changed, "deleted": deleted} | extra
    return Point(backup_id=n, taken_at=day(n), level="full", size_bytes=noisy(rng, size), **fields)


def verdicts(points: list[Point]) -> list[anomaly.Verdict]:
    """Judge each point against the ones before it, leaving out the suspicious unless acknowledged."""
    kept: list[Point] = []
    out = []
    for point in points:
        verdict = anomaly.judge(point, kept)
        out.append(verdict)
        if not verdict.suspicious or point.acknowledged:
            kept.append(point)
    return out


def fired(results: list[anomaly.Verdict]) -> dict[int, list[str]]:
    return {i: [f.rule for f in v.findings] for i, v in enumerate(results) if v.findings}


def test_steady_growth_of_one_percent_a_day_raises_nothing():
    rng = random.Random(1)
    points = [normal_point(rng, n, 50 * GB * 1.01**n, int(100_000 * 1.01**n)) for n in range(60)]
    results = verdicts(points)
    assert fired(results) == {}
    assert all(v.judged for v in results[anomaly.MIN_HISTORY :])


def test_weekly_cycle_three_times_larger_or_smaller_raises_nothing():
    for factor in (3.0, 1 / 3):
        rng = random.Random(2)
        points = []
        for n in range(60):
            weekend = day(n).weekday() >= 5
            size = 20 * GB * 1.003**n * (factor if weekend else 1)
            entries = int(80_000 * (factor if weekend else 1))  # a weekly export folder comes and goes
            points.append(normal_point(rng, n, size, entries, new=0, deleted=0))
        assert fired(verdicts(points)) == {}, factor


def test_too_little_history_gives_no_verdict():
    rng = random.Random(3)
    points = [normal_point(rng, n, 10 * GB, 10_000) for n in range(anomaly.MIN_HISTORY)]
    wrecked = Point(99, day(anomaly.MIN_HISTORY), "full", GB, 10_000, 0, 9_500, 0)
    verdict = anomaly.judge(wrecked, points[:-1])
    assert not verdict.judged and not verdict.suspicious
    assert "too little history" in verdict.reason
    assert anomaly.judge(wrecked, points).suspicious


def history(rng: random.Random, days: int = 30) -> list[Point]:
    return [normal_point(rng, n, 10 * GB * 1.005**n, 10_000) for n in range(days)]


def test_encryption_like_change_of_ninety_percent_of_files_fires():
    rng = random.Random(4)
    points = history(rng)
    encrypted = Point(100, day(30), "full", noisy(rng, 10 * GB * 1.005**30), 10_000, 0, 9_000, 0)
    verdict = anomaly.judge(encrypted, points)
    assert [f.rule for f in verdict.findings] == ["changed_burst"]
    assert "9,000 of 10,000 files changed (90%)" in verdict.findings[0].summary
    assert re.search(r"usually 1\.\d %", verdict.findings[0].summary)
    evidence = verdict.evidence(encrypted)
    assert evidence["rules"] == ["changed_burst"]
    assert evidence["baseline"]["changed_share"]["points"] == 30
    assert evidence["compared_with"] == [p.backup_id for p in points]


def test_mass_deletion_of_sixty_percent_fires():
    rng = random.Random(5)
    points = history(rng)
    wiped = Point(100, day(30), "full", noisy(rng, 10 * GB * 1.005**30), 4_000, 0, 10, 6_000)
    rules = {f.rule for f in anomaly.judge(wiped, points).findings}
    assert {"mass_deletion", "shrink_files"} <= rules


def test_sudden_shrink_by_eighty_percent_fires():
    rng = random.Random(6)
    points = history(rng)
    expected = 10 * GB * 1.005**30
    shrunk = Point(100, day(30), "full", int(expected * 0.2), 10_000, 20, 100, 20)
    verdict = anomaly.judge(shrunk, points)
    assert [f.rule for f in verdict.findings] == ["shrink_size"]
    assert "80% less than the usual" in verdict.findings[0].summary


def test_tiny_client_does_not_alarm_over_a_few_files_or_megabytes():
    rng = random.Random(7)
    points = [normal_point(rng, n, 20 << 20, 40) for n in range(30)]
    everything = Point(100, day(30), "full", 2 << 20, 40, 0, 40, 0)
    assert anomaly.judge(everything, points).findings == []


def test_one_off_import_fires_and_once_acknowledged_becomes_the_new_normal():
    rng = random.Random(8)
    points = history(rng)
    imported = Point(100, day(30), "full", int(40 * GB), 30_000, 20_000, 50, 5)
    assert {f.rule for f in anomaly.judge(imported, points).findings} == {"unusual_size"}
    acknowledged = Point(100, day(30), "full", int(40 * GB), 30_000, 20_000, 50, 5, acknowledged=True)
    later = [*points, acknowledged]
    for n in range(31, 45):
        point = normal_point(rng, n, 40 * GB * 1.005 ** (n - 30), 30_000)
        assert anomaly.judge(point, later).findings == [], n
        later.append(point)


def test_a_suspicious_point_left_out_keeps_the_next_one_judged_against_the_clean_baseline():
    rng = random.Random(9)
    points = history(rng)
    shrunk = Point(100, day(30), "full", GB, 10_000, 0, 50, 0)
    results = verdicts([*points, shrunk, Point(101, day(31), "full", GB, 10_000, 0, 50, 0)])
    assert fired(results) == {30: ["shrink_size"], 31: ["shrink_size"]}


def weekly_fulls(rng: random.Random, days: int, *, full_day: int, spread: float = 0.02) -> list[Point]:
    """A full of about 100 GB every 7th day (``n % 7 == full_day``), incrementals of about 2 GB between."""
    points = []
    for n in range(days):
        level, size = ("full", 100 * GB) if n % 7 == full_day else ("incremental", 2 * GB)
        size = noisy(rng, size, spread)  # drawn before ``changed``: the seeded histories depend on it
        points.append(Point(n, day(n), level, size, 50_000, 100, noisy(rng, 600, 0.2), 50))
    return points


def test_sizes_compare_like_with_like_levels():
    """Weekly fulls of 100 GB and daily incrementals of 2 GB: neither looks odd to the other."""
    points = weekly_fulls(random.Random(10), 90, full_day=6)
    assert fired(verdicts(points)) == {}


def test_a_full_is_judged_against_the_fulls_before_it_however_many_incrementals_came_between():
    points = weekly_fulls(random.Random(11), 56, full_day=0)
    shrunk_full = Point(99, day(56), "full", 10 * GB, 50_000, 100, 600, 50)
    verdict = anomaly.judge(shrunk_full, points)
    assert verdict.comparisons["size_bytes"].points == 8  # every full of the 56 days, not 4 of the last 30
    assert [f.rule for f in verdict.findings] == ["shrink_size"]


def test_a_quiet_days_small_incremental_is_not_a_shrinkage():
    """Issue #17: an incremental's size is the day's change, not the data held. Weekly fulls of
    100 GB and daily incrementals of about 2 GB, then a quiet day's 50 MB incremental: no alert.
    A full that shrinks the same way still fires."""
    points = weekly_fulls(random.Random(12), 56, full_day=0, spread=0.1)
    quiet = Point(99, day(57), "incremental", 50 << 20, 50_000, 5, 40, 3)
    verdict = anomaly.judge(quiet, points)
    assert verdict.judged and verdict.comparisons["size_bytes"].z <= -anomaly.Z_THRESHOLD
    assert verdict.findings == []
    shrunk_full = Point(100, day(56), "full", 10 * GB, 50_000, 100, 600, 50)
    assert [f.rule for f in anomaly.judge(shrunk_full, points).findings] == ["shrink_size"]
    # unusual_size still judges both levels: a 40 GB incremental after 2 GB ones is worth a look.
    huge = Point(101, day(57), "incremental", 40 * GB, 50_000, 100, 600, 50)
    assert [f.rule for f in anomaly.judge(huge, points).findings] == ["unusual_size"]
