"""Report rows and their files, the monthly run and the chargeback mail."""

from __future__ import annotations

import pytest

from reports import delivery, tasks
from reports.models import Report
from tests.reports.builders import OCTOBER

pytestmark = pytest.mark.django_db


def test_generate_stores_a_report_row_with_its_file(chargeback_estate):
    stored = delivery.generate(
        "chargeback", OCTOBER, formats=("pdf", "csv"), cost_center=chargeback_estate.retail
    )

    pdf, csv = stored["pdf"], stored["csv"]
    assert (pdf.kind, pdf.month, pdf.cost_center, pdf.format) == (
        "chargeback",
        OCTOBER.first_day,
        chargeback_estate.retail,
        "pdf",
    )
    assert pdf.file.name.startswith("reports/2026-10/")
    assert pdf.file.read(5) == b"%PDF-" and pdf.pages >= 2
    assert csv.file.read().decode("utf-8-sig").startswith("month,cost_centre,")
    assert pdf.summary["amount"] == "11.78"


def test_generating_again_replaces_the_row_and_its_file(
    chargeback_estate, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = delivery.generate("chargeback", OCTOBER, formats=("csv",))["csv"]
    old_path = first.file.path
    with django_capture_on_commit_callbacks(execute=True):
        second = delivery.generate("chargeback", OCTOBER, formats=("csv",))["csv"]

    assert second.pk == first.pk
    assert Report.objects.count() == 1
    second.refresh_from_db()
    assert second.file.storage.exists(second.file.name)
    if old_path != second.file.path:
        assert not first.file.storage.exists(first.file.name)  # the old file went with the old row


def test_monthly_run_makes_last_months_reports_and_mails_each_cost_centre(
    chargeback_estate, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        queued = tasks.generate_monthly("2026-10")

    assert queued == 3 + 2  # three company-wide kinds, two cost centres
    company = Report.objects.filter(cost_center=None, application=None)
    assert sorted(company.values_list("kind", "format")) == [
        ("chargeback", "csv"), ("chargeback", "pdf"), ("compliance", "csv"), ("compliance", "pdf"),
        ("operations", "csv"), ("operations", "pdf"),
    ]  # fmt: skip
    assert Report.objects.filter(cost_center=chargeback_estate.retail, kind="chargeback").count() == 2
    mails = {tuple(mail.to): mail for mail in mailoutbox}
    assert set(mails) == {("retail@example.com",), (chargeback_estate.corporate.owner_email,)}
    mail = mails[("retail@example.com",)]
    assert "October 2026" in mail.subject and "CC-1" in mail.subject
    assert "11.78" in mail.body
    names = [(name, content_type) for name, _, content_type in mail.attachments]
    assert names == [
        ("chargeback-2026-10-CC-1.pdf", "application/pdf"),
        ("chargeback-2026-10-CC-1.csv", "text/csv; charset=utf-8"),
    ]
    assert mail.attachments[0][1].startswith(b"%PDF-")
    pdf = Report.objects.get(cost_center=chargeback_estate.retail, format="pdf")
    assert pdf.emailed_to == "retail@example.com" and pdf.emailed_at is not None


def test_running_the_month_again_replaces_the_files_but_mails_no_one_twice(
    chargeback_estate, django_capture_on_commit_callbacks, mailoutbox
):
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.generate_monthly("2026-10")

    assert Report.objects.count() == 6 + 4
    assert len(mailoutbox) == 2


def test_a_deleted_cost_centre_is_skipped(db):
    assert tasks.deliver_chargeback(987654, "2026-10") is None
