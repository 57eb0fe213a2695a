"""Is this recovery point unusual for its client? The thresholds and the statistic, in one place.

Pure: figures in, a ``Verdict`` out; no ORM, no clock. ``catalog/services/anomalies.py``
gathers the figures and stores the verdict; docs/anomalies.md says what fires, why these
numbers and how to tune them.

A point is compared with its client's own recent history, never with other clients:

- **Robust statistic.** Every comparison is a robust z-score, ``(value − median) / (1.4826 · MAD)``,
  so that one odd point in the history does not move the baseline, with a floor on the
  scale so that a very steady client does not alarm on ordinary noise.
- **Steady growth.** Sizes and file counts are compared in logarithms after removing the
  trend (the Theil–Sen slope: the median of the slopes between every two points), so a
  client growing 1 % a day is expected to be 1 % larger tomorrow.
- **Weekly cycles.** A point must be unusual against the whole history *and* against the
  points taken on the same weekday, so weekend backups three times larger (or smaller) are
  expected on weekends.
- **Like with like.** Sizes are compared with points of the same level (a full with fulls, an
  incremental with incrementals); the file count and the shares of files new, changed and
  deleted do not depend on the level (an incremental's file list lists the whole tree).
- **Absolute guards.** No verdict before ``MIN_HISTORY`` points; a rule needs a minimum
  relative change *and* a minimum absolute one, so a tiny client does not alarm over 30 files.
- **Acknowledged points** (an owner said "expected: a one-off import") are part of the
  baseline; when one moved the size or file count, the older points are rebased by that step,
  so the next normal point is not judged against the level before the import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median

# --- Thresholds (docs/anomalies.md explains each; tune here and only here) ---------------------

#: Points of history looked at (the client's newest before the judged one). About a month of
#: daily backups: long enough to see four of each weekday, short enough to follow real change.
HISTORY_POINTS = 30
#: Points older than this are not history any more (a client idle for months starts afresh).
HISTORY_DAYS = 60
#: No verdict with fewer comparable points than this: eight is a week and a day of daily backups,
#: the least that gives every weekday one predecessor.
MIN_HISTORY = 8
#: How far from the baseline, in robust standard deviations, a figure must be to count as unusual.
#: 4 is beyond what ordinary day-to-day variation reaches (a normal 3.5-sigma day is not an incident).
Z_THRESHOLD = 4.0
#: 1.4826 · MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826
#: The least scale of a size or file-count comparison, in natural log units: ±10 % is noise for any
#: client, however steady its history (a history of identical sizes has MAD 0).
LOG_SCALE_FLOOR = 0.10
#: The least scale of a share comparison (changed, deleted): 2 percentage points.
SHARE_SCALE_FLOOR = 0.02

#: Sudden shrinkage: at most this fraction of the expected size / file count is left (half gone) ...
SHRINK_MAX_LEFT = 0.5
#: ... and at least this many bytes / files went (a 40 MB client losing 30 MB is not an incident).
MIN_BYTES_CHANGE = 256 << 20
MIN_FILES_CHANGE = 50
#: Unusual size (growth): at least this many times the expected size, and MIN_BYTES_CHANGE more.
GROWTH_MIN_RATIO = 2.0
#: A burst of changed files (encryption-like): at least this share of the files present in both
#: points changed content, and MIN_FILES_CHANGE files, and unusual for this client.
CHANGED_SHARE_MIN = 0.5
#: Mass deletion: at least this share of the previous point's entries is gone, and MIN_FILES_CHANGE.
DELETED_SHARE_MIN = 0.3
#: An acknowledged point rebases the older points' sizes / file counts only when it moved them by
#: more than this factor (log units: ±25 %); below that it is noise and the history stays as it was.
ACK_STEP_MIN = math.log(1.25)
#: Points before an acknowledged one that give the level it stepped from.
ACK_STEP_POINTS = 7

RULES = {
    "shrink_size": "sudden shrinkage of the size",
    "shrink_files": "sudden drop of the file count",
    "unusual_size": "unusual size",
    "changed_burst": "burst of changed files (encryption-like)",
    "mass_deletion": "mass deletion",
}


@dataclass(frozen=True)
class Point:
    """One recovery point's figures. ``new``/``changed``/``deleted`` are against the point before it
    (None: unknown, e.g. no file list); ``entries`` is its file list's length (None: no file list)."""

    backup_id: int
    taken_at: datetime  # in the portal's time zone: its weekday is the one people live by
    level: str
    size_bytes: int
    entries: int | None = None
    new: int | None = None
    changed: int | None = None
    deleted: int | None = None
    acknowledged: bool = False

    @property
    def common(self) -> int | None:
        """Entries present in this point and the one before."""
        if self.entries is None or self.new is None:
            return None
        return max(self.entries - self.new, 0)

    @property
    def changed_share(self) -> float | None:
        common = self.common
        if not common or self.changed is None:
            return None
        return self.changed / common

    @property
    def deleted_share(self) -> float | None:
        common = self.common
        if common is None or self.deleted is None or common + self.deleted == 0:
            return None
        return self.deleted / (common + self.deleted)

    @property
    def previous_entries(self) -> int | None:
        common = self.common
        return None if common is None or self.deleted is None else common + self.deleted


@dataclass(frozen=True)
class Comparison:
    """One figure against its baseline: the centre it was expected at and how far it is."""

    value: float
    expected: float  # in the figure's own units (bytes, entries, share)
    median: float  # of the history's (detrended) values, in the compared scale (log or share)
    mad: float
    z: float  # the more lenient of the whole-history and the same-weekday z (0 when they disagree)
    points: int
    weekday_points: int

    def as_dict(self) -> dict:
        return {
            "value": self.value,
            "expected": round(self.expected, 4),
            "median": round(self.median, 6),
            "mad": round(self.mad, 6),
            "z": round(self.z, 2),
            "points": self.points,
            "weekday_points": self.weekday_points,
        }


@dataclass(frozen=True)
class Finding:
    rule: str
    summary: str  # words for people: the figure and its baseline


@dataclass
class Verdict:
    """What ``judge`` found. ``judged`` is False when the history was too short for any rule."""

    judged: bool
    findings: list[Finding] = field(default_factory=list)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    compared_with: list[int] = field(default_factory=list)
    reason: str = ""

    @property
    def suspicious(self) -> bool:
        return bool(self.findings)

    def evidence(self, point: Point) -> dict:
        """The JSON kept on the backup: its figures, the baselines, the rules fired, the points compared."""
        return {
            "version": 1,
            "rules": [f.rule for f in self.findings],
            "summaries": [f.summary for f in self.findings],
            "figures": {
                "size_bytes": point.size_bytes,
                "entries": point.entries,
                "new": point.new,
                "changed": point.changed,
                "deleted": point.deleted,
                "changed_share": point.changed_share,
                "deleted_share": point.deleted_share,
            },
            "baseline": {name: c.as_dict() for name, c in self.comparisons.items()},
            "compared_with": self.compared_with,
        }


# --- The statistic ---------------------------------------------------------------------------


def mad(values: list[float], centre: float | None = None) -> float:
    """The median absolute deviation from ``centre`` (default: the median)."""
    centre = median(values) if centre is None else centre
    return median(abs(v - centre) for v in values)


def theil_sen(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the Theil–Sen line: the median pairwise slope, robust to outliers."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    slope = median(slopes) if slopes else 0.0
    return slope, median(y - slope * x for x, y in zip(xs, ys, strict=True))


def robust_z(value: float, history: list[float], floor: float) -> tuple[float, float, float]:
    """(z, median, MAD) of ``value`` against ``history``, the scale at least ``floor``."""
    centre = median(history)
    deviation = mad(history, centre)
    return (value - centre) / max(MAD_TO_SIGMA * deviation, floor), centre, deviation


def _days(moment: datetime, origin: datetime) -> float:
    return (moment - origin).total_seconds() / 86400


def compare(
    point: Point,
    history: list[Point],
    values: list[float],
    value: float,
    *,
    log: bool,
) -> Comparison:
    """``value`` of ``point`` against ``values`` of ``history`` (oldest first, same length).

    ``log``: sizes and counts, compared as logarithms after removing the trend; else shares,
    compared as they are. The z that counts is the more lenient of the whole history's and the
    same weekday's (when the history has that weekday), and 0 when they point different ways.
    """
    floor = LOG_SCALE_FLOOR if log else SHARE_SCALE_FLOOR
    origin = history[0].taken_at
    if log:
        ys = _rebased([math.log(max(v, 1.0)) for v in values], history)
        xs = [_days(p.taken_at, origin) for p in history]
        slope, intercept = theil_sen(xs, ys)
        residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
        trend = intercept + slope * _days(point.taken_at, origin)
        target = math.log(max(value, 1.0)) - trend
    else:
        residuals, trend, target = list(values), 0.0, value
    z_all, centre, deviation = robust_z(target, residuals, floor)
    z, expected_at = z_all, centre
    day = point.taken_at.weekday()
    weekday = [r for p, r in zip(history, residuals, strict=True) if p.taken_at.weekday() == day]
    if weekday:
        z_day, centre_day, _ = robust_z(target, weekday, floor)
        if z_day * z_all <= 0:
            z = 0.0
        elif abs(z_day) < abs(z_all):
            z = z_day
        # What this point was expected at: its weekday's level where the history has it.
        expected_at = centre_day
    expected = math.exp(trend + expected_at) if log else expected_at
    return Comparison(value, expected, centre, deviation, z, len(history), len(weekday))


def _rebased(ys: list[float], history: list[Point]) -> list[float]:
    """Log values with the points before each acknowledged step moved to the level it stepped to."""
    out = list(ys)
    shift = 0.0
    for i in range(len(ys) - 1, -1, -1):
        out[i] = ys[i] + shift
        if history[i].acknowledged and i > 0:
            step = ys[i] - median(ys[max(0, i - ACK_STEP_POINTS) : i])
            if abs(step) > ACK_STEP_MIN:
                shift += step
    return out


# --- The rules -------------------------------------------------------------------------------


def judge(point: Point, history: list[Point]) -> Verdict:
    """The rules fired by ``point`` against its ``history`` (the client's earlier points, oldest first,
    suspicious ones already left out, acknowledged ones in). Cut to ``HISTORY_POINTS`` and
    ``HISTORY_DAYS`` here, so every caller judges the same way."""
    recent = [
        p
        for p in history
        if p.taken_at < point.taken_at and _days(point.taken_at, p.taken_at) <= HISTORY_DAYS
    ]
    # Sizes: the newest points of the same level (weekly fulls go back further than daily incrementals).
    same_level = [p for p in recent if p.level == point.level][-HISTORY_POINTS:]
    history = recent[-HISTORY_POINTS:]
    compared = {p.backup_id for p in history} | {p.backup_id for p in same_level}
    verdict = Verdict(judged=False, compared_with=[p.backup_id for p in recent if p.backup_id in compared])
    if len(same_level) >= MIN_HISTORY:
        verdict.judged = True
        size = compare(point, same_level, [p.size_bytes for p in same_level], point.size_bytes, log=True)
        verdict.comparisons["size_bytes"] = size
        _size_rules(verdict, size, point.level)
    counted = [p for p in history if p.entries is not None]
    if point.entries is not None and len(counted) >= MIN_HISTORY:
        verdict.judged = True
        files = compare(point, counted, [p.entries for p in counted], point.entries, log=True)
        verdict.comparisons["entries"] = files
        if (
            files.z <= -Z_THRESHOLD
            and point.entries <= SHRINK_MAX_LEFT * files.expected
            and files.expected - point.entries >= MIN_FILES_CHANGE
        ):
            verdict.findings.append(
                Finding(
                    "shrink_files",
                    f"{point.entries:,} entries in its file list, usually {files.expected:,.0f} "
                    f"({_baseline(files)})",
                )
            )
    _share_rule(verdict, point, history, "changed")
    _share_rule(verdict, point, history, "deleted")
    if not verdict.judged:
        verdict.reason = (
            f"too little history: {len(history)} earlier point(s), {len(same_level)} of the same level; "
            f"at least {MIN_HISTORY} are needed"
        )
    return verdict


#: The level whose size is the data held. An incremental's size is what changed since its base: a
#: quiet day's small incremental is not data gone, so ``shrink_size`` judges fulls only (the file
#: count, ``shrink_files``, sees a wiped tree in an incremental as well). ``unusual_size`` judges both.
FULL = "full"


def _size_rules(verdict: Verdict, size: Comparison, level: str) -> None:
    value, expected = size.value, size.expected
    moved = abs(value - expected) >= MIN_BYTES_CHANGE
    if level == FULL and size.z <= -Z_THRESHOLD and value <= SHRINK_MAX_LEFT * expected and moved:
        verdict.findings.append(
            Finding(
                "shrink_size",
                f"size {human_bytes(value)}, {1 - value / expected:.0%} less than the usual "
                f"{human_bytes(expected)} ({_baseline(size)})",
            )
        )
    if size.z >= Z_THRESHOLD and value >= GROWTH_MIN_RATIO * expected and moved:
        verdict.findings.append(
            Finding(
                "unusual_size",
                f"size {human_bytes(value)}, {value / expected:.1f} times the usual "
                f"{human_bytes(expected)} ({_baseline(size)})",
            )
        )


def _share_rule(verdict: Verdict, point: Point, history: list[Point], what: str) -> None:
    share = getattr(point, f"{what}_share")
    count = getattr(point, what)
    known = [p for p in history if getattr(p, f"{what}_share") is not None]
    if share is None or len(known) < MIN_HISTORY:
        return
    verdict.judged = True
    comparison = compare(point, known, [getattr(p, f"{what}_share") for p in known], share, log=False)
    verdict.comparisons[f"{what}_share"] = comparison
    minimum = CHANGED_SHARE_MIN if what == "changed" else DELETED_SHARE_MIN
    if comparison.z < Z_THRESHOLD or share < minimum or count < MIN_FILES_CHANGE:
        return
    if what == "changed":
        rule, words, of = "changed_burst", "changed", point.common
    else:
        rule, words, of = "mass_deletion", "deleted", point.previous_entries
    verdict.findings.append(
        Finding(
            rule,
            f"{count:,} of {of:,} files {words} ({share:.0%}), usually {_percent(comparison.expected)} "
            f"({_baseline(comparison)})",
        )
    )


def _baseline(c: Comparison) -> str:
    same_day = f", {c.weekday_points} on the same weekday" if c.weekday_points else ""
    return f"median of {c.points} points{same_day}"


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %" if share < 0.1 else f"{share:.0%}"


def human_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} PB"  # pragma: no cover
