"""Human-readable sizes and ages for admin, pages and reports."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "—"
    size = float(num_bytes)
    if abs(size) < 1024:
        return f"{int(size)} B"
    for unit in _UNITS[1:]:
        size /= 1024
        # Compare the rounded value, or 1048575 B would read "1024.0 KiB".
        if round(abs(size), 1) < 1024 or unit == _UNITS[-1]:
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def human_duration(delta: timedelta | None) -> str:
    if delta is None:
        return "—"
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def human_age(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    text = human_duration((now or timezone.now()) - moment)
    return text if text == "in the future" else f"{text} ago"
