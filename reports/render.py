"""Turn a built report into a PDF (WeasyPrint, from templates/reports/pdf/) or a CSV.

The PDF is the page budget: WeasyPrint spends roughly 0.2 s and several MB per
page, so a company-wide PDF summarises (cost centres, applications, top-N
exceptions) and leaves the client rows to the CSV and to each cost centre's
own PDF (``detail="clients"``).
"""

from __future__ import annotations

import csv as csv_module
import io
from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string

from reports import charts
from reports.base import BuiltReport
from reports.choices import Detail, Paper
from reports.templatetags.report_format import count, duration, money, pct, signed, signed_pct

PAGE_SIZES = {Paper.A4: "A4", Paper.LETTER: "letter"}


@dataclass(frozen=True)
class RenderedPdf:
    data: bytes
    pages: int


def pdf(report: BuiltReport, *, paper: str = Paper.A4, detail: str = Detail.SUMMARY) -> bytes:
    """The report as a PDF, on A4 or Letter; ``detail="clients"`` adds every client's rows."""
    return render_pdf(report, paper=paper, detail=detail).data


def render_pdf(report: BuiltReport, *, paper: str = Paper.A4, detail: str = Detail.SUMMARY) -> RenderedPdf:
    from weasyprint import HTML  # imported late: it loads Pango and fonts, which most processes never need

    document = HTML(string=html(report, paper=paper, detail=detail)).render()
    return RenderedPdf(document.write_pdf(), len(document.pages))


def html(report: BuiltReport, *, paper: str = Paper.A4, detail: str = Detail.SUMMARY) -> str:
    paper, detail = _paper(paper), Detail(detail)
    context = {
        "report": report,
        "detail": detail,
        "page_size": PAGE_SIZES[paper],
        "time_zone": settings.TIME_ZONE,
        "header_left": f"Backup Portal · {report.title} report · {report.month.label}",
        "footer_left": f"{report.scope.label} · generated {report.generated_at:%Y-%m-%d %H:%M %Z}",
        **CONTEXTS[report.kind](report, detail),
    }
    return render_to_string(f"reports/pdf/{report.kind}.html", context)


def _paper(value: str) -> Paper:
    """ "A4" or "Letter", in any case."""
    for paper in Paper:
        if str(value).lower() == paper.value.lower():
            return paper
    raise ValueError(f"unknown paper {value!r}; one of {', '.join(Paper.values)}")


def csv(report: BuiltReport) -> str:
    """The report's rows, one per client, for spreadsheets (the same figures as the PDF)."""
    out = io.StringIO()
    writer = csv_module.writer(out, lineterminator="\r\n")
    writer.writerow(report.csv_header())
    writer.writerows(report.csv_rows())
    return out.getvalue()


def _figure(value: str, label: str, *, tone: str = "", note: str = "") -> dict:
    return {"value": value, "label": label, "tone": tone, "note": note}


def _chargeback(report, detail) -> dict:
    totals = report.totals
    change_tone = "fail" if totals.change > 0 else "ok" if totals.change < 0 else ""
    contents = [("summary", "Summary"), ("applications", "Applications")]
    contents.append(("clients", "Clients") if detail == Detail.CLIENTS else ("changes", "Largest changes"))
    contents.append(("definitions", "Definitions"))
    return {
        "key_figures": [
            _figure(money(totals.amount), f"charged for {report.month.label}"),
            _figure(
                signed(totals.change) if totals.previous_amount else "—",
                f"on {report.month.previous().label} ({money(totals.previous_amount)})",
                tone=change_tone,
                note=signed_pct(totals.change_pct) if totals.previous_amount else "",
            ),
            _figure(money(totals.gb_months), "stored GB-months"),
            _figure(count(totals.clients), f"clients in {len(report.applications):,} applications"),
        ],
        "contents": contents,
        "trend_chart": charts.columns(
            [(month.short_label, amount) for month, amount in report.trend],
            fmt=lambda value: f"{value:,.2f}",
            label="Amount charged per month",
        ),
    }


def _compliance(report, detail) -> dict:
    share = report.compliance_pct
    contents = [
        ("exceptions", "Exceptions"),
        ("summary", "Summary by criterion"),
        ("applications", "Applications"),
    ]
    if detail == Detail.CLIENTS:
        contents.append(("clients", "Clients"))
    contents.append(("definitions", "Definitions"))
    totals = report.totals
    return {
        "key_figures": [
            _figure(
                pct(share),
                "of clients compliant",
                tone="ok" if share == 100 else "fail" if share is not None else "",
            ),
            _figure(count(len(report.exceptions)), "exceptions", tone="fail" if report.exceptions else "ok"),
            _figure(f"{report.rpo_ok:,} of {report.clients:,}", "met their RPO on ≥ 99 % of days"),
            _figure(
                count(report.open_critical_alerts),
                "critical alerts open at the month end",
                tone="fail" if report.open_critical_alerts else "",
            ),
        ],
        "contents": contents,
        "meter_chart": charts.meter(
            [("Compliant", report.compliant, charts.OK), ("Exceptions", len(report.exceptions), charts.FAIL)],
            label="Compliant clients and exceptions",
        ),
        "criteria_chart": charts.bars(
            [
                ("RPO met on ≥ 99 % of days", totals.rpo_pct or 0.0),
                ("Restore test current", totals.tests_pct or 0.0),
                ("Retention honoured", totals.retention_pct or 0.0),
                ("Chain whole (restorable)", totals.chains_pct or 0.0),
            ],
            fmt=lambda value: pct(value),
            label="Share of clients meeting each criterion",
            color=charts.BRAND,
        ),
    }


def _operations(report, detail) -> dict:
    total = report.total
    work = report.work
    contents = [
        ("summary", "Jobs"),
        ("failures", "Failures"),
        ("agents", "Silent agents"),
        ("storage", "Storage"),
    ]
    if report.forecasts is not None:
        contents.append(("capacity", "Capacity forecast"))
    if work is not None:
        contents.append(("people", "Requests and people"))
    contents.append(("definitions", "Definitions"))
    figures = [
        _figure(pct(total.success_rate, 2), f"of {total.run:,} jobs succeeded", tone="ok"),
        _figure(count(report.failures), "failed jobs", tone="fail" if report.failures else "ok"),
        _figure(count(report.retries_recovered), "retries recovered by themselves"),
        _figure(
            duration(report.median_time_to_restore),
            "median time to restore",
            note=f"{report.restores_completed:,} restore request(s) completed",
        ),  # fmt: skip
    ]
    if work is not None:
        per_thousand = work.per_thousand_jobs
        figures.append(
            _figure("—" if per_thousand is None else f"{per_thousand:.1f}", "human actions per 1,000 jobs")
        )
        figures.append(_figure(pct(report.approved_by_system_pct), "of approvals by the system"))
    return {
        "key_figures": figures,
        "contents": contents,
        "daily_chart": charts.daily(report.daily, label="Jobs finished per day"),
        "failures_chart": charts.bars(
            report.failures_by_class, fmt=lambda v: f"{v:,}", label="Failures by class", color=charts.FAIL
        ),  # fmt: skip
        "storage_chart": charts.capacity(
            [(t.name, t.used_bytes, t.used_before_bytes, t.capacity_bytes) for t in report.storage],
            label="Storage used against capacity",
        ),
    }


CONTEXTS = {"chargeback": _chargeback, "compliance": _compliance, "operations": _operations}
