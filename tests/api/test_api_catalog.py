"""The catalog through the API: the fields of each representation, filters, tenancy, and backup now."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import AlertKind, BackupStatus, ClientStatus, JobKind, JobState, JobTrigger
from catalog.models import Job
from tests import factories
from tests.api.contract import (
    ALERT_FIELDS,
    APPLICATION_FIELDS,
    BACKUP_FIELDS,
    CLIENT_FIELDS,
    JOB_FIELDS,
)

pytestmark = pytest.mark.django_db


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


# --- Applications and clients ------------------------------------------------------------------


def test_applications_of_the_owner_only(owner_api, admin_api, app, other_app):
    data = owner_api.get("/api/v1/applications/").json()

    assert [row["slug"] for row in data["results"]] == ["orders"]
    assert set(data["results"][0]) == APPLICATION_FIELDS
    assert data["results"][0]["cost_center"] == app.cost_center.code
    assert owner_api.get(f"/api/v1/applications/{other_app.pk}/").status_code == 404
    assert len(ids(admin_api.get("/api/v1/applications/"))) == 2


def test_clients_show_their_protection_status(owner_api, app, mine, theirs):
    stale = factories.BackupClientFactory(application=app, agent=mine.agent, name="stale")
    factories.BackupFactory(client=stale, taken_at=timezone.now() - timedelta(days=3))
    never = factories.BackupClientFactory(
        application=app, agent=None, name="never", status=ClientStatus.PENDING_ENROLMENT
    )

    rows = {row["id"]: row for row in owner_api.get("/api/v1/clients/").json()["results"]}

    assert set(rows) == {mine.client.pk, stale.pk, never.pk}
    assert set(rows[mine.client.pk]) == CLIENT_FIELDS
    assert rows[mine.client.pk]["rpo_met"] is True
    assert rows[mine.client.pk]["last_backup_at"] is not None
    assert rows[mine.client.pk]["agent"] == mine.agent.hostname
    assert rows[mine.client.pk]["application"] == "orders"
    assert rows[stale.pk]["rpo_met"] is False
    assert (rows[never.pk]["rpo_met"], rows[never.pk]["last_backup_at"], rows[never.pk]["agent"]) == (
        False,
        None,
        None,
    )
    assert owner_api.get(f"/api/v1/clients/{theirs.client.pk}/").status_code == 404
    pending = owner_api.get("/api/v1/clients/", {"status": "pending_enrolment"})
    assert ids(pending) == [never.pk]


# --- Backups -------------------------------------------------------------------------------------


def test_backups_fields_filters_and_tenancy(owner_api, admin_api, app, mine, theirs):
    now = timezone.now()
    old = factories.BackupFactory(client=mine.client, taken_at=now - timedelta(days=10))
    expired = factories.BackupFactory(
        client=mine.client, taken_at=now - timedelta(days=40), status=BackupStatus.EXPIRED
    )
    other_client = factories.BackupClientFactory(application=app, agent=mine.agent)
    elsewhere = factories.BackupFactory(client=other_client, taken_at=now - timedelta(days=1))

    listed = owner_api.get("/api/v1/backups/")
    assert ids(listed) == [mine.backup.pk, elsewhere.pk, old.pk, expired.pk]  # newest first
    row = listed.json()["results"][0]
    assert set(row) == BACKUP_FIELDS
    assert (row["client"], row["application"], row["job"]) == (mine.client.pk, "orders", mine.backup.job_id)
    assert ids(owner_api.get("/api/v1/backups/", {"client": mine.client.pk})) == [
        mine.backup.pk,
        old.pk,
        expired.pk,
    ]
    assert ids(owner_api.get("/api/v1/backups/", {"status": "expired"})) == [expired.pk]
    window = {
        "taken_after": (now - timedelta(days=11)).isoformat(),
        "taken_before": (now - timedelta(days=1)).isoformat(),
    }
    assert ids(owner_api.get("/api/v1/backups/", window)) == [old.pk]
    assert ids(owner_api.get("/api/v1/backups/", {"application": "payroll"})) == []
    assert ids(admin_api.get("/api/v1/backups/", {"application": "payroll"})) == [theirs.backup.pk]
    assert owner_api.get(f"/api/v1/backups/{theirs.backup.pk}/").status_code == 404
    assert owner_api.get("/api/v1/backups/", {"client": theirs.client.pk}).json()["results"] == []


# --- Jobs ------------------------------------------------------------------------------------------


def test_jobs_fields_and_filters(owner_api, mine, theirs):
    failed = factories.JobFactory(
        client=mine.client,
        state=JobState.FAILED,
        bytes_done=512,
        bytes_total=1024,
        error_class="permission_denied",
        error_message="tar: /srv/data: Permission denied",
    )
    restore = factories.JobFactory(client=mine.client, kind=JobKind.RESTORE, backup=mine.backup)

    data = owner_api.get(f"/api/v1/jobs/{failed.pk}/").json()

    assert set(data) == JOB_FIELDS
    assert (data["bytes_done"], data["bytes_total"], data["error_class"], data["error"]) == (
        512,
        1024,
        "permission_denied",
        "tar: /srv/data: Permission denied",
    )
    assert data["agent"] == mine.agent.hostname
    assert ids(owner_api.get("/api/v1/jobs/", {"state": "failed"})) == [failed.pk]
    assert ids(owner_api.get("/api/v1/jobs/", {"kind": "restore"})) == [restore.pk]
    assert set(ids(owner_api.get("/api/v1/jobs/", {"client": mine.client.pk}))) == {
        failed.pk,
        restore.pk,
        mine.backup.job_id,
    }
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert ids(owner_api.get("/api/v1/jobs/", {"since": future})) == []
    assert theirs.backup.job_id not in ids(owner_api.get("/api/v1/jobs/"))
    assert owner_api.get(f"/api/v1/jobs/{theirs.backup.job_id}/").status_code == 404


# --- Alerts ----------------------------------------------------------------------------------------


def test_alerts_of_the_owners_applications(owner_api, mine, theirs):
    mine_alert = factories.AlertFactory(client=mine.client)
    resolved = factories.AlertFactory(
        client=mine.client, kind=AlertKind.RPO_BREACHED, resolved_at=timezone.now()
    )
    theirs_alert = factories.AlertFactory(client=theirs.client)

    listed = owner_api.get("/api/v1/alerts/")

    assert set(ids(listed)) == {mine_alert.pk, resolved.pk}
    assert set(listed.json()["results"][0]) == ALERT_FIELDS
    assert ids(owner_api.get("/api/v1/alerts/", {"open": "true"})) == [mine_alert.pk]
    assert ids(owner_api.get("/api/v1/alerts/", {"kind": "rpo_breached"})) == [resolved.pk]
    assert owner_api.get(f"/api/v1/alerts/{theirs_alert.pk}/").status_code == 404


# --- Backup now ------------------------------------------------------------------------------------


def test_backup_now_queues_a_job_and_answers_202(owner_api, owner, mine):
    response = owner_api.post(f"/api/v1/clients/{mine.client.pk}/backup-now/")

    assert response.status_code == 202
    data = response.json()
    assert set(data) == JOB_FIELDS
    job = Job.objects.get(pk=data["id"])
    assert (data["kind"], data["state"], data["client"], data["agent"]) == (
        "backup",
        "queued",
        mine.client.pk,
        mine.agent.hostname,
    )
    assert (job.trigger, job.requested_by) == (JobTrigger.USER, owner)


def test_backup_now_again_answers_with_the_backup_already_open(owner_api, mine):
    url = f"/api/v1/clients/{mine.client.pk}/backup-now/"

    answers = [owner_api.post(url) for _ in range(3)]

    assert [a.status_code for a in answers] == [202, 200, 200]
    assert len({a.json()["id"] for a in answers}) == 1
    assert all(set(a.json()) == JOB_FIELDS for a in answers)
    assert Job.objects.filter(client=mine.client, kind=JobKind.BACKUP, state=JobState.QUEUED).count() == 1


def test_backup_now_of_another_tenants_client_is_404(owner_api, theirs):
    response = owner_api.post(f"/api/v1/clients/{theirs.client.pk}/backup-now/")

    assert response.status_code == 404
    assert not Job.objects.filter(client=theirs.client, trigger=JobTrigger.USER).exists()


def test_backup_now_without_an_agent_is_409(owner_api, app):
    client = factories.BackupClientFactory(application=app, agent=None, status=ClientStatus.PENDING_ENROLMENT)

    response = owner_api.post(f"/api/v1/clients/{client.pk}/backup-now/")

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
