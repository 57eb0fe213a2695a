"""Last month's reports for the demo, so the Reports page has PDFs to open at once.

The same reports the monthly run makes (``reports.tasks.generate_monthly``):
company-wide chargeback, compliance and operations, and each cost centre's
chargeback, as PDF and CSV, for the previous calendar month. Nothing is mailed.
The demo owner owns every application of CC-100, so they see its chargeback.

Reports are keyed on (kind, month, scope, format) (``reports.delivery.store``):
one already stored with its file is kept as it is, so running ``seed_demo``
again adds no rows and renders nothing; one whose file is missing is made again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from catalog.models import CostCenter
from reports import delivery
from reports.choices import ReportFormat, ReportKind
from reports.models import Report
from reports.periods import Month

#: Both editions, as the monthly run stores them.
FORMATS = (ReportFormat.PDF, ReportFormat.CSV)


@dataclass(frozen=True)
class ReportsResult:
    month: Month
    generated: int  # files made by this run
    kept: int  # files already there


def seed_reports(now: datetime | None = None) -> ReportsResult:
    """Generate the monthly run's reports of the month before ``now`` that are not stored yet."""
    now = now or timezone.now()
    month = Month.last_completed(now)
    # The cost centres the monthly run bills: those with clients.
    centres = CostCenter.objects.filter(applications__clients__isnull=False).distinct().order_by("code")
    wanted = [(kind, None) for kind in ReportKind.values]
    wanted += [(ReportKind.CHARGEBACK, center) for center in centres]
    generated = kept = 0
    for kind, center in wanted:
        if _stored(kind, month, center):
            kept += len(FORMATS)
            continue
        generated += len(delivery.generate(kind, month, formats=FORMATS, cost_center=center, now=now))
    return ReportsResult(month=month, generated=generated, kept=kept)


def _stored(kind: str, month: Month, center: CostCenter | None) -> bool:
    """Both editions have a row and the file it names."""
    for fmt in FORMATS:
        report = Report.objects.for_key(kind=kind, month=month, fmt=fmt, cost_center=center).first()
        if report is None or not report.file or not report.file.storage.exists(report.file.name):
            return False
    return True
