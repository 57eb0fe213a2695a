"""Kinds, formats and paper sizes of reports."""

from django.db import models


class ReportKind(models.TextChoices):
    CHARGEBACK = "chargeback", "Chargeback"
    COMPLIANCE = "compliance", "Compliance"
    OPERATIONS = "operations", "Operations"


class ReportFormat(models.TextChoices):
    PDF = "pdf", "PDF"
    CSV = "csv", "CSV"


class Paper(models.TextChoices):
    A4 = "A4", "A4"
    LETTER = "Letter", "US Letter"


class Detail(models.TextChoices):
    """How far down a PDF goes: company-wide PDFs summarise, a cost centre's lists its clients."""

    SUMMARY = "summary", "Summary by cost centre and application"
    CLIENTS = "clients", "Every client"


#: What a report file is served as (downloads and mail attachments).
CONTENT_TYPES = {ReportFormat.PDF: "application/pdf", ReportFormat.CSV: "text/csv; charset=utf-8"}
