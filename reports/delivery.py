"""Generate a report, keep it as a Report row with its file, and mail a cost centre its chargeback.

One row per (kind, month, scope, format): generating again replaces the file in
place, so the monthly run and the admin's "Regenerate" can be repeated safely.
Each row records the applications whose data it holds (``Report.applications``):
an owner sees it only if they own every one. The cost centre's ``owner_email``
gets its chargeback by mail whoever may see it on the portal.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from reports import builders, render
from reports.base import BuiltReport
from reports.choices import CONTENT_TYPES, Detail, Paper, ReportFormat, ReportKind
from reports.models import Report
from reports.periods import Month
from reports.scope import Scope


def default_detail(built: BuiltReport) -> str:
    """Company-wide PDFs summarise; a cost centre's or an application's lists its clients."""
    return Detail.SUMMARY if built.scope.is_company else Detail.CLIENTS


def encode(
    built: BuiltReport, fmt: str, *, paper: str = Paper.A4, detail: str | None = None
) -> tuple[bytes, int | None]:
    """The file's bytes and its page count (None for a CSV)."""
    if fmt == ReportFormat.CSV:
        # With a byte-order mark, spreadsheet programs read the names as UTF-8.
        return render.csv(built).encode("utf-8-sig"), None
    rendered = render.render_pdf(built, paper=paper, detail=detail or default_detail(built))
    return rendered.data, rendered.pages


def generate(
    kind: str,
    month: Month,
    *,
    formats: Iterable[str] = (ReportFormat.PDF,),
    cost_center=None,
    application=None,
    paper: str = Paper.A4,
    detail: str | None = None,
    user=None,
    now: datetime | None = None,
) -> dict[str, Report]:
    """Build the figures once and store them in each format; returns {format: Report}.

    The applications covered are taken before and after building: one that joined or
    left the cost centre meanwhile may be in the figures, so it counts as covered.
    """
    scope = Scope.of(cost_center=cost_center, application=application)
    before = scope.application_ids()
    built = builders.build(kind, month, cost_center=scope.cost_center, application=scope.application, now=now)
    covers = before | built.scope.application_ids()
    stored = {}
    for fmt in formats:
        data, pages = encode(built, fmt, paper=paper, detail=detail)
        stored[fmt] = store(
            built, fmt, data, pages=pages, paper=paper if fmt == ReportFormat.PDF else "", user=user,
            covers=covers,
        )  # fmt: skip
    return stored


def store(
    built: BuiltReport,
    fmt: str,
    data: bytes,
    *,
    pages: int | None,
    paper: str,
    user=None,
    covers: Iterable[int] | None = None,
) -> Report:
    """Create or replace the Report row of (kind, month, scope, format) with ``data``.

    ``covers``: the ids of the applications whose data is in it; by default the
    scope's applications now.
    """
    scope = built.scope
    if covers is None:
        covers = scope.application_ids()
    name = f"{built.kind}-{built.month}-{scope.slug}.{fmt}"
    with transaction.atomic():
        report = (
            Report.objects.select_for_update()
            .order_by("pk")  # the default order joins cost centres and applications, which FOR UPDATE refuses
            .for_key(
                kind=built.kind, month=built.month, fmt=fmt,
                cost_center=scope.cost_center, application=scope.application,
            )
            .first()
        )  # fmt: skip
        if report is None:
            report = Report(
                kind=built.kind,
                month=built.month.first_day,
                format=fmt,
                cost_center=scope.cost_center,
                application=scope.application,
            )
        old_name = report.file.name if report.file else ""
        report.file.save(name, ContentFile(data), save=False)
        report.paper = paper
        report.size_bytes = len(data)
        report.pages = pages
        report.summary = built.summary()
        report.generated_at = built.generated_at
        report.generated_by = user
        report.save()
        # What the new file holds: an application gone from the cost centre since last time goes too.
        report.applications.set(covers)
        if old_name and old_name != report.file.name:
            storage = report.file.storage
            # Only once the new row is committed: a rollback keeps the old file in use.
            transaction.on_commit(lambda: storage.delete(old_name))
    return report


def email_chargeback(pdf_report: Report, *attachments: Report) -> None:
    """Mail a cost centre's owner its chargeback, the PDF and any ``attachments`` (the CSV) attached."""
    center = pdf_report.cost_center
    if center is None or pdf_report.kind != ReportKind.CHARGEBACK:
        raise ValueError("only a cost centre's chargeback is mailed")
    month = pdf_report.period
    context = {
        "center": center,
        "month": month,
        "summary": pdf_report.summary,
        "portal_url": f"{settings.PORTAL_BASE_URL}/reports/",
        "team_email": settings.PORTAL_BACKUP_TEAM_EMAIL,
    }
    message = EmailMessage(
        subject=f"Backup chargeback {month.label}: {center.code} {center.name}",
        body=render_to_string("reports/email/chargeback.txt", context),
        to=[center.owner_email],
        reply_to=[settings.PORTAL_BACKUP_TEAM_EMAIL],
    )
    sent = [pdf_report, *attachments]
    for report in sent:
        with report.file.open("rb") as handle:
            message.attach(report.download_name, handle.read(), CONTENT_TYPES[report.format])
    message.send()
    Report.objects.filter(pk__in=[report.pk for report in sent]).update(
        emailed_to=center.owner_email, emailed_at=timezone.now()
    )
