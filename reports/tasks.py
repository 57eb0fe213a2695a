"""Background tasks of the reports (run through core.queue). They take ids and month strings."""

from __future__ import annotations

import logging

from catalog.models import CostCenter
from core.queue import enqueue
from reports import delivery
from reports.choices import ReportFormat, ReportKind
from reports.periods import Month

log = logging.getLogger(__name__)

BOTH = (ReportFormat.PDF, ReportFormat.CSV)


def generate_monthly(month: str | None = None) -> int:
    """On the 1st: last month's company-wide reports, and each cost centre's chargeback, mailed.

    One task per report, so a slow or failing one holds up no other and each
    stays well inside the worker's timeout. Every task is idempotent.
    """
    period = Month.parse(month) if month else Month.last_completed()
    queued = 0
    for kind in ReportKind.values:
        enqueue(generate_company, kind, str(period))
        queued += 1
    centres = (
        CostCenter.objects.filter(applications__clients__isnull=False).distinct().values_list("pk", flat=True)
    )
    for center_id in centres:
        enqueue(deliver_chargeback, center_id, str(period))
        queued += 1
    log.info("queued %d report(s) for %s", queued, period)
    return queued


def generate_company(kind: str, month: str) -> list[int]:
    """A company-wide report as PDF and CSV."""
    stored = delivery.generate(kind, Month.parse(month), formats=BOTH)
    return [report.pk for report in stored.values()]


def deliver_chargeback(cost_center_id: int, month: str) -> list[int] | None:
    """A cost centre's chargeback (PDF with every client, and CSV), mailed to its owner once."""
    center = CostCenter.objects.filter(pk=cost_center_id).first()
    if center is None:
        return None  # deleted since
    stored = delivery.generate(ReportKind.CHARGEBACK, Month.parse(month), formats=BOTH, cost_center=center)
    pdf, csv = stored[ReportFormat.PDF], stored[ReportFormat.CSV]
    # A repeated run regenerates the files but does not mail the owner twice.
    if pdf.emailed_at is None and center.owner_email:
        delivery.email_chargeback(pdf, csv)
    return [pdf.pk, csv.pk]


def regenerate(report_id: int, user_id: int | None = None) -> int | None:
    """The admin's "Regenerate": the same kind, month, scope and format, from today's catalog."""
    from django.contrib.auth import get_user_model

    from reports.models import Report

    report = Report.objects.select_related("cost_center", "application").filter(pk=report_id).first()
    if report is None:
        return None
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    stored = delivery.generate(
        report.kind,
        report.period,
        formats=(report.format,),
        cost_center=report.cost_center,
        application=report.application,
        paper=report.paper or "A4",
        user=user,
    )
    return stored[report.format].pk
