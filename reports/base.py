"""What every report object shares: its kind, month, scope and the moment its figures describe."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import ClassVar

from django.utils import timezone

from reports.periods import Month
from reports.scope import Scope

CENT = Decimal("0.01")
#: Reports count in decimal units, like storage vendors and price lists: 1 GB = 10^9 bytes.
GB = 10**9


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def percent(part: float, whole: float) -> float | None:
    return part * 100 / whole if whole else None


@dataclass
class BuiltReport:
    """A built report: data only. ``reports.render`` turns it into a PDF or CSV."""

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: The CSV's columns, one row per client (or per line of the report).
    CSV_HEADER: ClassVar[list[str]] = []

    month: Month
    scope: Scope
    as_of: datetime
    generated_at: datetime = field(default_factory=timezone.now)

    @property
    def complete(self) -> bool:
        """False for the month in progress: its figures stop at ``as_of``."""
        return self.as_of >= self.month.end

    def csv_header(self) -> list[str]:
        return self.CSV_HEADER

    def csv_rows(self):
        raise NotImplementedError

    def summary(self) -> dict:
        """Headline figures kept on the Report row (JSON-safe)."""
        return {}
