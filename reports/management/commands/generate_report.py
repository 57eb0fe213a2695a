"""manage.py generate_report --kind chargeback --month 2026-10 [--format pdf|csv] [--output PATH] …"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError

from reports import builders, delivery
from reports.choices import Detail, Paper, ReportFormat, ReportKind
from reports.periods import Month


class Command(BaseCommand):
    help = (
        "Generate a monthly report. With --output, write the file there (- for standard output); "
        "without, store it as a Report row (replacing the previous one) under MEDIA_ROOT/reports/."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=ReportKind.values)
        parser.add_argument("--month", required=True, type=_month, help="YYYY-MM, e.g. 2026-10")
        parser.add_argument("--format", default=ReportFormat.PDF, choices=ReportFormat.values)
        parser.add_argument("--output", help="File to write (- for standard output).")
        parser.add_argument("--cost-center", help="A cost centre's code: its report only.")
        parser.add_argument("--application", help="An application's slug: its report only.")
        parser.add_argument("--paper", default=Paper.A4, choices=Paper.values)
        parser.add_argument(
            "--detail",
            choices=Detail.values,
            help="PDF detail: 'summary' (default company-wide) or 'clients' (default for a cost centre).",
        )

    def handle(self, *args, kind, month, format, output, cost_center, application, paper, detail, **options):
        if cost_center and application:
            raise CommandError("Give --cost-center or --application, not both.")
        if output is None:
            return self._store(kind, month, format, cost_center, application, paper, detail)
        try:
            built = builders.build(kind, month, cost_center=cost_center, application=application)
        except ObjectDoesNotExist as exc:
            raise CommandError(f"No such cost centre or application: {exc}") from exc
        data, pages = delivery.encode(built, format, paper=paper, detail=detail)
        if output == "-":
            sys.stdout.buffer.write(data)
            return None
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        pages_note = f", {pages} pages" if pages else ""
        self.stdout.write(f"Wrote {path} ({len(data):,} bytes{pages_note}).")
        return None

    def _store(self, kind, month, fmt, cost_center, application, paper, detail):
        try:
            stored = delivery.generate(
                kind, month, formats=(fmt,), cost_center=cost_center, application=application,
                paper=paper, detail=detail,
            )  # fmt: skip
        except ObjectDoesNotExist as exc:
            raise CommandError(f"No such cost centre or application: {exc}") from exc
        report = stored[fmt]
        self.stdout.write(f"Stored {report} as {report.file.path} ({report.size_bytes:,} bytes).")


def _month(value: str) -> Month:
    try:
        return Month.parse(value)
    except ValueError as exc:
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(str(exc)) from exc
