"""Charts as inline SVG, drawn here in Python: no JavaScript, no fonts or images to fetch.

Each function returns markup ready for a template (``mark_safe``); every label
is escaped. Sizes are in CSS pixels (96 per inch): 660 px fits the text width
of both A4 and Letter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 660
FONT = "Liberation Sans, Helvetica, Arial, sans-serif"
INK = "#1d2433"
SOFT = "#5b6475"
GRID = "#e3e7ee"
BRAND = "#1f4e8c"
BRAND_LIGHT = "#9db8dc"
TRACK = "#edf0f5"
FAIL = "#b3261e"
OK = "#1b7a43"

Number = int | float | Decimal


def _svg(width: int, height: int, body: list[str], label: str) -> SafeString:
    return mark_safe(  # noqa: S308 - every text below went through escape()
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="{FONT}" font-size="10" fill="{INK}">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: float = 10, fill: str = INK,
          weight: str = "normal") -> str:  # fmt: skip
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
        f'font-weight="{weight}">{escape(text)}</text>'
    )


def _rect(x: float, y: float, width: float, height: float, fill: str, *, rx: float = 0) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" rx="{rx}" fill="{fill}"/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, *, width: float = 1) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{stroke}" stroke-width="{width}"/>'
    )


def nice_ceiling(value: float) -> float:
    """A round axis maximum above ``value``: 1, 2 or 5 × a power of ten."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def columns(points: Sequence[tuple[str, Number]], *, fmt: Callable[[Number], str], label: str,
            height: int = 190, highlight_last: bool = True) -> SafeString:  # fmt: skip
    """Vertical columns with their value on top, e.g. six months of amounts; the newest one stands out."""
    top, bottom, left = 22, 26, 8
    plot = height - top - bottom
    peak = nice_ceiling(float(max((p[1] for p in points), default=0)))
    slot = (WIDTH - left * 2) / max(len(points), 1)
    bar = min(slot * 0.56, 70)
    body = [_line(left, top + plot, WIDTH - left, top + plot, GRID)]
    for index, (name, value) in enumerate(points):
        h = plot * float(value) / peak if peak else 0
        x = left + slot * index + (slot - bar) / 2
        last = highlight_last and index == len(points) - 1
        body.append(_rect(x, top + plot - h, bar, h, BRAND if last else BRAND_LIGHT, rx=2))
        body.append(_text(x + bar / 2, top + plot - h - 6, fmt(value), anchor="middle",
                          weight="bold" if last else "normal"))  # fmt: skip
        body.append(_text(x + bar / 2, height - 9, name, anchor="middle", fill=SOFT))
    return _svg(WIDTH, height, body, label)


def daily(days: Sequence[tuple[date, int, int]], *, label: str, height: int = 170) -> SafeString:
    """Jobs finished per day, failures stacked in red on top of the successes."""
    top, bottom, left, right = 14, 24, 40, 8
    plot = height - top - bottom
    # At least 5, so that the five gridlines fall on whole jobs.
    peak = max(nice_ceiling(max((run for _, run, _ in days), default=0)), 5)
    slot = (WIDTH - left - right) / max(len(days), 1)
    bar = max(slot * 0.7, 1)
    body = []
    for step in range(6):
        value = peak * step / 5
        y = top + plot - plot * step / 5
        body.append(_line(left, y, WIDTH - right, y, GRID))
        body.append(_text(left - 5, y + 3, f"{value:,.0f}", anchor="end", size=8.5, fill=SOFT))
    for index, (day, run, failed) in enumerate(days):
        x = left + slot * index + (slot - bar) / 2
        ok_h = plot * (run - failed) / peak
        fail_h = plot * failed / peak
        body.append(_rect(x, top + plot - ok_h, bar, ok_h, BRAND_LIGHT))
        if failed:
            body.append(_rect(x, top + plot - ok_h - fail_h, bar, max(fail_h, 1.2), FAIL))
        if day.day == 1 or day.day % 5 == 0:
            body.append(_text(x + bar / 2, height - 8, f"{day.day}", anchor="middle", size=8.5, fill=SOFT))
    return _svg(WIDTH, height, body, label)


def bars(items: Sequence[tuple[str, Number]], *, fmt: Callable[[Number], str], label: str,
         color: str = BRAND, label_width: int = 230) -> SafeString:  # fmt: skip
    """Horizontal bars, largest first as given, each with its value at the end."""
    row, top = 22, 4
    height = top * 2 + row * max(len(items), 1)
    peak = float(max((value for _, value in items), default=0)) or 1.0
    room = WIDTH - label_width - 70
    body = []
    for index, (name, value) in enumerate(items):
        y = top + row * index
        w = room * float(value) / peak
        body.append(_text(label_width - 8, y + 14, name, anchor="end"))
        body.append(_rect(label_width, y + 4, room, 14, TRACK, rx=2))
        body.append(_rect(label_width, y + 4, max(w, 1.5), 14, color, rx=2))
        body.append(_text(label_width + w + 6, y + 14.5, fmt(value), weight="bold"))
    return _svg(WIDTH, height, body, label)


def capacity(
    targets: Sequence[tuple[str, float, float, float]], *, label: str, label_width: int = 150
) -> SafeString:
    """Per storage target (name, used, used a month before, capacity): fill against capacity.

    The dark bar is what it holds now, the tick what it held a month before.
    """
    row, top = 34, 4
    height = top * 2 + row * max(len(targets), 1) + 14
    room = WIDTH - label_width - 150
    body = []
    for index, (name, used, before, cap) in enumerate(targets):
        y = top + row * index
        share = min(used / cap, 1.0) if cap else 0.0
        tick = min(before / cap, 1.0) if cap else 0.0
        color = FAIL if share >= 0.85 else BRAND
        body.append(_text(label_width - 8, y + 17, name, anchor="end"))
        body.append(_rect(label_width, y + 6, room, 16, TRACK, rx=2))
        body.append(_rect(label_width, y + 6, max(room * share, 1.5), 16, color, rx=2))
        x_tick = label_width + room * tick
        body.append(_line(x_tick, y + 2, x_tick, y + 26, INK, width=1.5))
        fill = f"{share * 100:.1f} % of {cap / 10**9:,.0f} GB"
        body.append(_text(label_width + room + 8, y + 18, fill, weight="bold"))
    legend_y = height - 6
    body.append(_rect(label_width, legend_y - 8, 10, 8, BRAND))
    body.append(_text(label_width + 14, legend_y, "held at the month end", size=8.5, fill=SOFT))
    body.append(_line(label_width + 130, legend_y - 9, label_width + 130, legend_y + 1, INK, width=1.5))
    body.append(_text(label_width + 136, legend_y, "a month before", size=8.5, fill=SOFT))
    return _svg(WIDTH, height, body, label)


def meter(parts: Sequence[tuple[str, int, str]], *, label: str, height: int = 30) -> SafeString:
    """One bar split into coloured parts (label, count, colour), e.g. compliant against not."""
    total = sum(count for _, count, _ in parts) or 1
    x = 0.0
    body = []
    for name, count, color in parts:
        w = WIDTH * count / total
        if w <= 0:
            continue
        body.append(_rect(x, 0, w, height - 12, color))
        if w > 60:
            body.append(_text(x + 6, height - 18, f"{name}: {count:,}", fill="#ffffff", weight="bold"))
        x += w
    return _svg(WIDTH, height, body, label)
