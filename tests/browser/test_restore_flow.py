"""In a real browser: the owner asks for an in-place restore, a backup-team member approves it.

Screenshots land in test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import pytest

from catalog.choices import JobKind, JobState
from catalog.models import Job
from requests_app.choices import RequestStatus
from requests_app.models import RestoreRequest
from tests import factories
from tests.helpers import log_in

pytestmark = pytest.mark.browser


def test_owner_restore_request_and_admin_approval(browser, live_server, screenshot, backup_team_group):
    owner = factories.UserFactory(username="alice", email="alice@example.com")
    app = factories.ApplicationFactory(slug="webshop", name="Web Shop", owners=[owner])
    client = factories.BackupClientFactory(application=app, name="media")
    backup = factories.BackupFactory(client=client, size_bytes=3 * 1024**3)
    admin_user = factories.UserFactory(username="bob", is_staff=True)
    admin_user.groups.add(backup_team_group)

    owner_page = browser.new_page(viewport={"width": 1300, "height": 900})
    log_in(owner_page, live_server.url, "alice")
    assert "Web Shop" in owner_page.content()
    screenshot(owner_page, "01-owner-dashboard")

    owner_page.goto(f"{live_server.url}/clients/{client.pk}/")
    owner_page.click("text=Restore…")
    owner_page.wait_for_url(f"**/backups/{backup.pk}/restore/")
    assert "Approved automatically" in owner_page.inner_text("#decision")
    owner_page.fill("#id_target_location", "/srv/data")
    owner_page.check("#id_overwrite")
    owner_page.wait_for_function(
        "document.querySelector('#decision').innerText.includes(\"Needs the backup team's approval\")"
    )
    owner_page.fill("#id_reason", "Roll back the media folder after a bad import")
    screenshot(owner_page, "02-owner-restore-form-overwrite")
    owner_page.click("text=Request the restore")
    owner_page.wait_for_load_state("networkidle")
    request = RestoreRequest.objects.get()
    assert owner_page.url.endswith(f"/requests/restore/{request.pk}/")
    assert request.status == RequestStatus.SUBMITTED and request.overwrite
    assert "Submitted" in owner_page.content()
    screenshot(owner_page, "03-owner-request-submitted")

    admin_page = browser.new_page(viewport={"width": 1300, "height": 900})
    log_in(admin_page, live_server.url, "bob", path="/admin/login/")
    admin_page.goto(f"{live_server.url}/admin/requests_app/restorerequest/")
    screenshot(admin_page, "04-admin-approval-queue")
    admin_page.goto(f"{live_server.url}/admin/requests_app/restorerequest/{request.pk}/change/")
    admin_page.click("input[name=_approve]")
    admin_page.wait_for_load_state("networkidle")
    screenshot(admin_page, "05-admin-approved")

    request.refresh_from_db()
    assert (request.status, request.decided_by) == (RequestStatus.APPROVED, admin_user)
    job = Job.objects.get(kind=JobKind.RESTORE)
    assert (job.state, job.overwrite, job.target_location) == (JobState.QUEUED, True, "/srv/data")

    owner_page.reload()
    assert "Approved" in owner_page.content()
    timeline = owner_page.content()
    assert "bob" in timeline and "alice" in timeline
    screenshot(owner_page, "06-owner-request-approved")


def test_owner_cannot_open_another_applications_backup(browser, live_server):
    owner = factories.UserFactory(username="carol")
    factories.ApplicationFactory(owners=[owner])
    foreign = factories.BackupFactory()
    page = browser.new_page()
    log_in(page, live_server.url, "carol")
    response = page.goto(f"{live_server.url}/backups/{foreign.pk}/restore/")
    assert response.status == 404
