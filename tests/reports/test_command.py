"""manage.py generate_report."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from reports.models import Report

pytestmark = pytest.mark.django_db


def test_writes_a_pdf_to_the_output_path(chargeback_estate, tmp_path):
    path = tmp_path / "out" / "chargeback.pdf"

    call_command("generate_report", "--kind", "chargeback", "--month", "2026-10", "--output", str(path))

    assert path.read_bytes().startswith(b"%PDF-")
    assert not Report.objects.exists()


def test_writes_a_csv_for_one_cost_centre(chargeback_estate, tmp_path):
    path = tmp_path / "cc.csv"

    call_command(
        "generate_report", "--kind", "chargeback", "--month", "2026-10", "--format", "csv",
        "--cost-center", "CC-2", "--output", str(path),
    )  # fmt: skip

    lines = path.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("month,cost_centre,")
    assert [line.split(",")[5] for line in lines[1:]] == ["hr-db"]


def test_without_output_it_stores_a_report_row(chargeback_estate):
    call_command("generate_report", "--kind", "compliance", "--month", "2026-10", "--paper", "Letter")

    report = Report.objects.get()
    assert (report.kind, report.format, report.paper) == ("compliance", "pdf", "Letter")


def test_unknown_cost_centre_is_an_error(db, tmp_path):
    with pytest.raises(CommandError, match="No such cost centre"):
        call_command("generate_report", "--kind", "chargeback", "--month", "2026-10", "--cost-center", "NOPE",
                     "--output", str(tmp_path / "x.pdf"))  # fmt: skip


def test_a_month_must_read_yyyy_mm(db):
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("generate_report", "--kind", "chargeback", "--month", "October")
