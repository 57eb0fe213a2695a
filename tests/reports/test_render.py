"""PDF and CSV: the text of the PDFs carries the figures, and the CSV has the same ones."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from pypdf import PdfReader

from reports import builders, render
from tests.reports.builders import OCTOBER, at

pytestmark = pytest.mark.django_db

NOW = at(11, 26)
A4 = (595, 842)  # points
LETTER = (612, 792)


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def csv_rows(report) -> list[dict]:
    return list(csv.DictReader(io.StringIO(render.csv(report))))


def page_size(data: bytes) -> tuple[int, int]:
    box = PdfReader(io.BytesIO(data)).pages[0].mediabox
    return round(float(box.width)), round(float(box.height))


def test_company_chargeback_pdf_shows_the_totals(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    text = pdf_text(render.pdf(report))

    assert "Chargeback report" in text and "October 2026" in text
    assert "11.88" in text  # grand total
    assert "11.78" in text and "0.10" in text  # CC-1 and CC-2
    assert "+6.33" in text  # change from September
    assert "Page 2 of" in text
    assert "10^9" in text.replace("109", "10^9") or "GB = 10" in text


def test_company_pdf_summarises_and_leaves_clients_to_the_csv(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    summary = pdf_text(render.pdf(report, detail="summary"))
    detailed = pdf_text(render.pdf(report, detail="clients"))

    assert "Every client billed in" not in summary
    assert "Largest changes" in summary
    assert "Every client billed in" in detailed
    assert all(name in detailed for name in ("orders-db", "files", "hr-db"))


def test_csv_and_pdf_agree_client_by_client(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, cost_center=chargeback_estate.retail, now=NOW)

    rows = csv_rows(report)
    text = pdf_text(render.pdf(report, detail="clients"))

    assert [row["client"] for row in rows] == ["files", "orders-db"]
    assert sum(Decimal(row["amount"]) for row in rows) == report.totals.amount == Decimal("11.78")
    for row in rows:
        assert row["client"] in text
        assert f"{Decimal(row['amount']):,.2f}" in text
        assert f"{Decimal(row['stored_gb_months']):,.2f}" in text
    assert "CC-2" not in text  # another cost centre's report


def test_csv_rows_carry_the_hand_computed_figures(chargeback_estate):
    rows = {row["client"]: row for row in csv_rows(builders.build("chargeback", OCTOBER, now=NOW))}

    assert rows["orders-db"]["stored_gb_months"] == "142.00"
    assert rows["orders-db"]["protected_gb"] == "80.00"
    assert rows["orders-db"]["amount"] == "7.10"
    assert rows["orders-db"]["previous_month_amount"] == "1.83"
    assert rows["files"]["price_per_gb_month"] == "0.1800"
    assert rows["files"]["price_note"]


def test_paper_sizes(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=NOW)

    assert page_size(render.pdf(report, paper="A4")) == A4
    assert page_size(render.pdf(report, paper="Letter")) == LETTER


def test_compliance_pdf_leads_with_the_exceptions(compliance_estate):
    report = builders.build("compliance", OCTOBER, now=NOW)

    data = render.pdf(report, detail="clients")
    text = pdf_text(data)

    assert "66.7" in text  # overall compliance
    first_page = PdfReader(io.BytesIO(data)).pages[1].extract_text()  # after the cover
    assert first_page.startswith("Exceptions")
    assert first_page.index("daily") < first_page.index("Summary by criterion")
    assert "29/31 d" in first_page
    rows = {row["client"]: row for row in csv_rows(report)}
    assert rows["daily"]["rpo_met_pct"] == "93.5" and rows["daily"]["compliant"] == "no"
    assert rows["hourly"]["restore_time_seconds"] == "600"


def test_operations_pdf_and_csv(operations_estate):
    report = builders.build("operations", OCTOBER, now=NOW)

    text = pdf_text(render.pdf(report))

    assert "73.68" in text  # success rate
    assert "150.0" in text  # human actions per 1,000 jobs
    assert "quiet.example.com" in text
    (row,) = csv_rows(report)
    assert (row["jobs_run"], row["failed"], row["failed_permission_denied"]) == ("20", "5", "2")


def test_names_are_escaped_in_the_pdf_source(chargeback_estate):
    chargeback_estate.retail.name = 'Retail <b>"&'
    chargeback_estate.retail.save()
    report = builders.build("chargeback", OCTOBER, cost_center=chargeback_estate.retail, now=NOW)

    html = render.html(report)

    assert "<b>" not in html.split("<body>", 1)[1]
    assert "Retail" in pdf_text(render.pdf(report))
