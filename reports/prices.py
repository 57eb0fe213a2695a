"""What a policy cost on a given day, and the month cut where prices changed.

A price change mid-month is billed day by day: the month is cut into slices at
each day a price changed, every slice is measured in GB-months on its own and
billed at the price in effect on its first day.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from catalog.models import ProtectionPolicy
from reports.models import PolicyPrice
from reports.periods import Month


@dataclass(frozen=True)
class Slice:
    """Part of a month between two price changes: [start, end), priced as on ``first_day``."""

    month: Month
    start: datetime
    end: datetime
    first_day: date
    last_day: date


class PriceBook:
    """Every policy's current price and price history, loaded in two queries."""

    def __init__(self, current: dict[int, Decimal], history: dict[int, list[tuple[date, Decimal]]]):
        self.current = current
        self.history = history

    @classmethod
    def load(cls) -> PriceBook:
        current = dict(ProtectionPolicy.objects.values_list("pk", "price_per_gb_month"))
        history: dict[int, list[tuple[date, Decimal]]] = defaultdict(list)
        rows = PolicyPrice.objects.order_by("policy_id", "effective_from")
        for policy_id, day, price in rows.values_list("policy_id", "effective_from", "price_per_gb_month"):
            history[policy_id].append((day, price))
        return cls(current, dict(history))

    def price_on(self, policy_id: int, day: date) -> Decimal:
        changes = self.history.get(policy_id, [])
        index = bisect.bisect_right(changes, day, key=lambda change: change[0])
        return changes[index - 1][1] if index else self.current[policy_id]

    def changes_within(self, month: Month) -> list[tuple[int, date, Decimal, Decimal]]:
        """(policy id, day, old price, new price) for every change after the month's first day."""
        found = []
        for policy_id, changes in self.history.items():
            for day, price in changes:
                if month.first_day < day <= month.last_day:
                    old = self.price_on(policy_id, date.fromordinal(day.toordinal() - 1))
                    if old != price:
                        found.append((policy_id, day, old, price))
        return sorted(found, key=lambda change: (change[1], change[0]))

    def slices(self, month: Month, as_of: datetime) -> list[Slice]:
        """The month cut at every day any price changed, up to ``as_of``."""
        cuts = sorted({day for _, day, _, _ in self.changes_within(month)})
        firsts = [month.first_day, *cuts]
        slices = []
        for index, first in enumerate(firsts):
            start = month.day_start(first)
            end = month.day_start(firsts[index + 1]) if index + 1 < len(firsts) else month.end
            end = min(end, as_of)
            if start >= end:
                continue
            last = date.fromordinal(
                (firsts[index + 1] if index + 1 < len(firsts) else month.next().first_day).toordinal() - 1
            )
            slices.append(Slice(month, start, end, first, last))
        return slices
