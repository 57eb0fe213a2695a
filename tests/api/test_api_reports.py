"""GET /api/v1/reports/: the reports an integration's user may see, each with a working download link."""

from __future__ import annotations

import pytest

from tests.reports.builders import OCTOBER, make_report

pytestmark = pytest.mark.django_db

FIELDS = {
    "id", "kind", "month", "cost_center", "application", "format", "paper", "pages", "size_bytes",
    "generated_at", "download_url",
}  # fmt: skip


@pytest.fixture
def estate(app, other_app, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return {
        "company": make_report(),
        "mine": make_report(cost_center=app.cost_center),
        "my_app": make_report("compliance", application=app, fmt="csv"),
        "theirs": make_report(cost_center=other_app.cost_center),
    }


def test_owner_key_lists_only_their_reports_with_download_links(owner_api, estate, app):
    response = owner_api.get("/api/v1/reports/")

    assert response.status_code == 200
    rows = response.json()["results"]
    assert {row["id"] for row in rows} == {estate["mine"].pk, estate["my_app"].pk}
    mine = next(row for row in rows if row["id"] == estate["mine"].pk)
    assert set(mine) == FIELDS
    assert (mine["month"], mine["cost_center"], mine["kind"]) == (
        str(OCTOBER),
        app.cost_center.code,
        "chargeback",
    )

    download = owner_api.get(mine["download_url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content).startswith(b"%PDF")
    assert download["Content-Type"] == "application/pdf"


def test_other_tenants_and_company_reports_are_404_for_an_owner(owner_api, estate):
    for name in ("theirs", "company"):
        assert owner_api.get(f"/api/v1/reports/{estate[name].pk}/").status_code == 404
        assert owner_api.get(f"/api/v1/reports/{estate[name].pk}/download/").status_code == 404


def test_backup_team_sees_every_report_and_can_filter(admin_api, estate):
    everything = admin_api.get("/api/v1/reports/").json()["results"]
    assert {row["id"] for row in everything} == {report.pk for report in estate.values()}
    compliance = admin_api.get("/api/v1/reports/", {"kind": "compliance"}).json()["results"]
    assert [row["id"] for row in compliance] == [estate["my_app"].pk]
