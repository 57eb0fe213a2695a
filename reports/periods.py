"""Calendar months, the period of every report.

A month runs from 00:00 on its first day to 00:00 on the first day of the next,
in ``TIME_ZONE`` (UTC unless configured otherwise). Reports of the month in
progress stop at "now": ``Month.as_of`` is the moment their figures describe.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time

from django.utils import timezone

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    """One calendar month, e.g. ``Month.parse("2026-10")``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1 <= self.year <= 9998:
            raise ValueError(f"not a month: {self.year}-{self.month}")

    @classmethod
    def parse(cls, text: str) -> Month:
        """``"2026-10"`` → October 2026; anything else raises ValueError."""
        match = _MONTH.match(str(text).strip())
        if not match:
            raise ValueError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-10")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, moment: datetime | date) -> Month:
        day = timezone.localdate(moment) if isinstance(moment, datetime) else moment
        return cls(day.year, day.month)

    @classmethod
    def last_completed(cls, now: datetime | None = None) -> Month:
        """The month before the one ``now`` is in: what the monthly run reports on."""
        return cls.of(now or timezone.now()).previous()

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def label(self) -> str:
        return f"{calendar.month_name[self.month]} {self.year}"

    @property
    def short_label(self) -> str:
        return f"{calendar.month_abbr[self.month]} {self.year}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return date(self.year, self.month, self.days_in_month)

    @property
    def days_in_month(self) -> int:
        return calendar.monthrange(self.year, self.month)[1]

    @property
    def start(self) -> datetime:
        return _midnight(self.first_day)

    @property
    def end(self) -> datetime:
        """The first moment after the month (exclusive bound)."""
        return self.next().start

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def previous(self) -> Month:
        return self.shifted(-1)

    def next(self) -> Month:
        return self.shifted(1)

    def shifted(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def as_of(self, now: datetime | None = None) -> datetime:
        """The month's end, or ``now`` for the month in progress."""
        now = now or timezone.now()
        return min(self.end, max(self.start, now))

    def is_complete(self, now: datetime | None = None) -> bool:
        return (now or timezone.now()) >= self.end

    def day_start(self, day: date) -> datetime:
        return _midnight(day)


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
