"""Number formats for the PDF reports: money, GB (10^9 bytes), percentages, signed changes, durations."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django import template

from reports.base import GB

register = template.Library()

DASH = "—"


@register.filter
def money(value) -> str:
    if value is None or value == "":
        return DASH
    return f"{Decimal(value):,.2f}"


@register.filter
def signed(value) -> str:
    """+1,234.56 / −12.00 / 0.00, with a real minus sign."""
    if value is None or value == "":
        return DASH
    value = Decimal(value)
    if not value:
        return "0.00"
    return f"{value:+,.2f}".replace("-", "\N{MINUS SIGN}")


@register.filter
def pct(value, places: int = 1) -> str:
    if value is None or value == "":
        return DASH
    return f"{float(value):.{int(places)}f}\N{NARROW NO-BREAK SPACE}%"


@register.filter
def signed_pct(value) -> str:
    if value is None:
        return DASH
    return f"{float(value):+.1f}\N{NARROW NO-BREAK SPACE}%".replace("-", "\N{MINUS SIGN}")


@register.filter
def gb(num_bytes) -> str:
    """Bytes as decimal gigabytes, two places: 1 GB = 10^9 bytes, as billed."""
    if num_bytes is None:
        return DASH
    return f"{Decimal(num_bytes) / GB:,.2f}"


@register.filter
def gbm(value) -> str:
    return DASH if value is None else f"{Decimal(value):,.2f}"


@register.filter
def count(value) -> str:
    return DASH if value is None else f"{int(value):,}"


@register.filter
def hours(value: timedelta | None) -> str:
    """An age in hours (with days when long): '23 h', '3 d 4 h'."""
    if value is None:
        return DASH
    total = int(value.total_seconds() // 3600)
    if total < 48:
        return f"{total}\N{NO-BREAK SPACE}h"
    return f"{total // 24}\N{NO-BREAK SPACE}d {total % 24}\N{NO-BREAK SPACE}h"


@register.filter
def duration(value: timedelta | None) -> str:
    """A job or wait: '42 s', '12 min', '2 h 05 min', '3 d 4 h'."""
    if value is None:
        return DASH
    seconds = int(value.total_seconds())
    nb = "\N{NO-BREAK SPACE}"
    if seconds < 60:
        return f"{seconds}{nb}s"
    if seconds < 3600:
        return f"{seconds // 60}{nb}min"
    if seconds < 86400:
        return f"{seconds // 3600}{nb}h {seconds % 3600 // 60:02d}{nb}min"
    return f"{seconds // 86400}{nb}d {seconds % 86400 // 3600}{nb}h"


@register.filter
def tone(value, kind: str = "change") -> str:
    """A CSS class for a figure: a rise in cost reads as 'up', a fall as 'down'."""
    if value is None:
        return ""
    return "up" if Decimal(value) > 0 else "down" if Decimal(value) < 0 else ""


@register.filter
def css_string(value) -> str:
    """Text for a CSS string in double quotes (page headers), safe inside <style>."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("<", "\\3c ")
