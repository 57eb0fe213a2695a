"""The operations report's capacity forecast: one row per target, in the company-wide edition only."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from pypdf import PdfReader

from reports import builders, render
from tests import factories
from tests.reports.builders import GB, OCTOBER, at

pytestmark = pytest.mark.django_db

TB = 1000 * GB
NOW = at(11, 26, 6)


def pdf_text(data: bytes) -> str:
    """The PDF's words, lines joined: a cell may wrap."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages).split())


def target_with_history(name: str, capacity_bytes: int, *, days: int = 20, client=None):
    """100 GB a day at 00:30 from ``days`` days before NOW's day to that day, kept a year."""
    storage = factories.StorageTargetFactory(name=name, capacity_bytes=capacity_bytes)
    client = client or factories.BackupClientFactory(
        policy=factories.ProtectionPolicyFactory(storage_target=storage)
    )
    for day in range(-days, 1):
        moment = at(11, 26, 0, 30) + timedelta(days=day)
        factories.BackupFactory(
            client=client, storage_target=storage, taken_at=moment, expires_at=moment + timedelta(days=365),
            stored_size_bytes=100 * GB, size_bytes=100 * GB,
        )  # fmt: skip
    return storage


@pytest.fixture
def capacity_estate(app):
    """backup-nfs-1: 2.1 TB of 5.05 TB, + 100 GB a day: full on day 30, 2026-12-26.
    archive: the same arrivals on 1 PB: not within 2 years. new-target: nothing stored."""
    client = factories.BackupClientFactory(application=app, name="orders-db")
    target_with_history("backup-nfs-1", int(5.05 * TB), client=client)
    target_with_history("archive", 1000 * TB)
    factories.StorageTargetFactory(name="new-target", capacity_bytes=10 * TB)


def test_the_company_report_forecasts_every_target(capacity_estate):
    report = builders.build("operations", OCTOBER, now=NOW)

    forecasts = {f.target_name: f for f in report.forecasts}
    assert {"backup-nfs-1", "archive", "new-target"} <= set(forecasts)  # and the app's default target
    assert forecasts["backup-nfs-1"].full_on.isoformat() == "2026-12-26"
    assert forecasts["archive"].full_on is None
    assert forecasts["new-target"].reason == "no backup stored yet"

    text = pdf_text(render.pdf(report))
    assert "Capacity forecast" in text
    assert "2026-12-26" in text and "in 30 days" in text
    assert "not within 2 years" in text
    assert "no forecast: no backup stored yet" in text
    assert "2,100.00" in text  # held, GB
    assert "As of 2026-11-26" in text


def test_a_scoped_report_leaves_the_forecast_to_the_company_edition(capacity_estate, app):
    report = builders.build("operations", OCTOBER, application=app, now=NOW)

    assert report.forecasts is None
    assert "Capacity forecast" not in pdf_text(render.pdf(report))
