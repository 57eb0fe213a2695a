"""In a real browser: an owner finds two lost files in a recovery point and asks for them back.

Screenshots land in test-artifacts/screenshots/ (file-browser, search, restore-form) for a person to look at.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Agent
from requests_app.models import RestoreRequest
from tests import factories
from tests.helpers import log_in
from tests.index_files import give_file_list

pytestmark = pytest.mark.browser

LONG_NAME = "quarterly-report-for-the-board-of-directors-" * 3 + "final-v2.pdf"
MEDIA = {
    "srv/webshop": {
        "media": {
            "invoices": {f"invoice-2025-{i:03d}.pdf": 90_000 + i for i in range(1, 6)},
            "product-images": {"shoe.jpg": 300_000},
            "logo.png": 4096,
            "banner.svg": 12_345,
            LONG_NAME: 2_500_000,
            b"inv\xff.pdf": 777,
            "current": ("->", "invoices/invoice-2025-005.pdf"),
            "logo-copy.png": ("=>", "srv/webshop/media/logo.png"),
        }
    }
}


def test_owner_ticks_two_files_and_sees_them_on_the_restore_form(browser, live_server, screenshot):
    owner = factories.UserFactory(username="alice")
    app = factories.ApplicationFactory(slug="webshop", name="Web Shop", owners=[owner])
    estate = factories.build_estate(app, options={"paths": ["/srv/webshop"]})
    estate.agent.protocol = Agent.SELECTIVE_RESTORE_PROTOCOL
    estate.agent.save(update_fields=["protocol"])
    give_file_list(estate.backup, MEDIA)
    older = factories.BackupFactory(client=estate.client, taken_at=timezone.now() - timedelta(days=1))
    give_file_list(older, {"srv/webshop": {"media": {"invoices": {"invoice-2025-001.pdf": 88_000}}}})

    page = browser.new_page(viewport={"width": 1300, "height": 900})
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/clients/{estate.client.pk}/")
    page.click(f"a[href^='/clients/{estate.client.pk}/backups/{estate.backup.pk}/files/']")
    page.click("text=srv")
    page.click("text=webshop")
    page.click("a.entry:has-text('media')")
    page.wait_for_url("**path=%2Fsrv%2Fwebshop%2Fmedia")
    assert page.inner_text("nav.path-crumbs").strip() == "/srv/webshop/media"
    assert page.locator("nav.path-crumbs a").all_inner_texts() == ["/", "srv", "webshop"]
    assert page.is_disabled("[data-restore-selected]")  # nothing ticked yet
    page.check("input[value='/srv/webshop/media/logo.png']")
    page.check("input[value='/srv/webshop/media/inv\\\\377.pdf']")
    assert "2 selected" in page.inner_text("[data-selection-count]")
    screenshot(page, "file-browser")

    page.click("text=Restore selected…")
    page.wait_for_url(f"**/backups/{estate.backup.pk}/restore/?**")
    summary = page.inner_text(".selection-summary")
    assert "You are restoring 2 selected items:" in summary
    assert "/srv/webshop/media/logo.png" in summary and "/srv/webshop/media/inv\\377.pdf" in summary
    page.fill("#id_target_location", "/srv/restore/lost-files")
    screenshot(page, "restore-form")
    page.click("text=Request the restore")
    page.wait_for_load_state("networkidle")
    assert sorted(RestoreRequest.objects.get().paths) == [
        "/srv/webshop/media/inv\\377.pdf",
        "/srv/webshop/media/logo.png",
    ]

    page.goto(f"{live_server.url}/clients/{estate.client.pk}/")
    page.fill("#file-search-name", "INVOICE-2025-00?.pdf")
    page.click("button:has-text('Find files')")
    page.wait_for_url("**/files/?name=**")
    assert page.locator("section.result").count() == 5
    assert "in 1 point" in page.inner_text("section.result >> nth=0")
    screenshot(page, "search")
