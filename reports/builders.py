"""The one entry point for a report's figures: ``build(kind, month, cost_center=…, application=…)``."""

from __future__ import annotations

from datetime import datetime

from reports import chargeback, compliance, operations
from reports.base import BuiltReport
from reports.choices import ReportKind
from reports.periods import Month
from reports.scope import Scope

BUILDERS = {
    ReportKind.CHARGEBACK: chargeback.build,
    ReportKind.COMPLIANCE: compliance.build,
    ReportKind.OPERATIONS: operations.build,
}


def build(
    kind: str, month: Month, *, cost_center=None, application=None, now: datetime | None = None
) -> BuiltReport:
    """The figures of one report; ``cost_center``/``application`` (instance, code or slug) narrow it.

    Aggregation happens in the database in a constant number of queries,
    whatever the number of clients and backups.
    """
    try:
        builder = BUILDERS[ReportKind(kind)]
    except ValueError:
        raise ValueError(f"unknown report kind {kind!r}; one of {', '.join(ReportKind.values)}") from None
    scope = Scope.of(cost_center=cost_center, application=application)
    return builder(month, scope, now=now)
