"""A backup's file list through the agent API: the upload (PUT jobs/<id>/index), the report that
attaches it, what is refused, and its removal with the recovery point or after a day unclaimed."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import BackupStatus, ErrorClass, JobKind, JobState
from catalog.models import Backup, Job
from catalog.services import file_lists, jobs, retention
from tests import factories
from tests.helpers import agent_client, key_client
from tests.index_files import WEBSHOP, complete, upload, write_files_index, write_lying_index

SHA = hashlib.sha256(b"data").hexdigest()


@pytest.fixture
def running(db):
    """A backup job handed to its agent, and an API client speaking for that agent."""
    job = factories.JobFactory(kind=JobKind.BACKUP)
    api, _ = agent_client(job.agent)
    jobs.claim(job.agent)
    job.refresh_from_db()
    return job, api


@pytest.fixture
def index(tmp_path) -> tuple[bytes, dict]:
    """A real file list, as the agent writes it: its bytes and its summary."""
    summary = write_files_index(tmp_path / "agent" / "index.bpi", WEBSHOP)
    return (tmp_path / "agent" / "index.bpi").read_bytes(), summary


def incoming(root) -> list[str]:
    folder = root / "incoming"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_upload_then_report_gives_the_backup_its_file_list(
    running, index, index_root, owner, django_capture_on_commit_callbacks
):
    job, api = running
    body, summary = index

    assert upload(api, job, body).status_code == 204
    assert incoming(index_root) == [f"job-{job.pk}-{summary['sha256']}.bpi"]
    with django_capture_on_commit_callbacks(execute=True):
        response = complete(api, job, index=summary)

    assert response.status_code == 200, response.json()
    backup = Backup.objects.get(job=job)
    assert backup.has_file_list
    assert (backup.index_entries, backup.index_kind, backup.index_size_bytes, backup.index_sha256) == (
        9,
        "files",
        len(body),
        summary["sha256"],
    )
    assert file_lists.index_file(job.pk).read_bytes() == body
    assert incoming(index_root) == []  # moved into place
    listing = file_lists.list_folder(backup, "/srv/webshop/media")
    names = [entry.name for entry in listing.entries]
    assert names == ["invoice-2026-01.pdf", "invoice-2026-02.pdf", "logo.png"]


def test_the_file_list_is_browsable_through_the_api_once_attached(running, index, owner):
    job, api = running
    body, summary = index
    job.client.application.owners.add(owner)
    upload(api, job, body)
    complete(api, job, index=summary)

    backup = Backup.objects.get(job=job)
    response = key_client(owner).get(f"/api/v1/backups/{backup.pk}/files/", {"path": "/srv/webshop"})

    assert response.status_code == 200, response.json()
    assert [row["name"] for row in response.json()["results"]] == ["app.py", "current", "media"]


def test_a_file_list_that_does_not_hold_together_is_no_file_list_to_its_owner(
    running, owner, tmp_path, client
):
    """A taken-over agent uploads a list whose footer promises entries no block holds."""
    job, api = running
    job.client.application.owners.add(owner)
    summary = write_lying_index(tmp_path / "lying.bpi")
    assert upload(api, job, (tmp_path / "lying.bpi").read_bytes()).status_code == 204
    assert complete(api, job, index=summary).status_code == 200
    backup = Backup.objects.get(job=job)
    owner_api = key_client(owner)

    listing = owner_api.get(f"/api/v1/backups/{backup.pk}/files/", {"path": "/"})
    search = owner_api.get(f"/api/v1/clients/{job.client_id}/files/", {"name": "secret"})
    restore = owner_api.post(
        "/api/v1/restore-requests/",
        {
            "backup": backup.pk,
            "target_agent": job.agent.hostname,
            "target_location": "/srv/restore",
            "paths": ["/srv/secret.txt"],
        },
        format="json",
    )
    client.force_login(owner)
    page = client.get(f"/clients/{job.client_id}/backups/{backup.pk}/files/", {"path": "/"})

    assert (listing.status_code, listing.json()["code"]) == (404, "no_file_list")
    assert "cannot be read" in listing.json()["detail"]
    # The blocks themselves hold together: what they hold is found, nothing more.
    assert [row["path"] for row in search.json()["results"]] == ["/srv/secret.txt"]
    assert restore.status_code == 400 and "cannot be read" in str(restore.json())
    assert page.status_code == 200 and "cannot be read" in page.content.decode()


def test_the_same_upload_twice_is_fine(running, index, index_root, django_capture_on_commit_callbacks):
    job, api = running
    body, summary = index

    assert upload(api, job, body).status_code == 204
    assert upload(api, job, body).status_code == 204

    assert incoming(index_root) == [f"job-{job.pk}-{summary['sha256']}.bpi"]
    with django_capture_on_commit_callbacks(execute=True):
        assert complete(api, job, index=summary).status_code == 200
    assert Backup.objects.get(job=job).has_file_list
    # Once in place, the same file list again is acknowledged and changes nothing.
    assert upload(api, job, body).status_code == 204
    assert incoming(index_root) == []


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(running, index, index_root):
    job, api = running
    body, _ = index

    response = upload(api, job, body, sha="0" * 64)

    assert response.status_code == 400
    assert "SHA-256" in response.json()["detail"]
    assert incoming(index_root) == []


def test_a_missing_or_malformed_checksum_header_is_refused(running, index):
    job, api = running
    body, _ = index

    assert upload(api, job, body, sha="").status_code == 400
    assert upload(api, job, body, sha="not-hex").status_code == 400


def test_what_is_not_a_file_list_is_refused(running, index_root):
    job, api = running

    response = upload(api, job, b"PK\x03\x04 a zip file, or anything else" * 10)

    assert response.status_code == 400
    assert "not a file list" in response.json()["detail"]
    assert incoming(index_root) == []


def test_a_file_list_over_the_limit_is_refused_with_413(running, settings, index_root):
    job, api = running
    settings.PORTAL_INDEX_MAX_MB = 1

    response = upload(api, job, b"\0" * (1024 * 1024 + 1))

    assert response.status_code == 413
    assert incoming(index_root) == []


def test_another_agents_job_is_404(running, index, db):
    job, _ = running
    body, _ = index
    stranger, _ = agent_client(factories.AgentFactory())

    assert upload(stranger, job, body).status_code == 404


def test_no_token_is_401(running, index):
    from rest_framework.test import APIClient

    job, _ = running
    body, _ = index
    assert upload(APIClient(), job, body).status_code == 401


def test_a_job_that_is_not_running_a_backup_is_409(db, index):
    body, _ = index
    queued = factories.JobFactory(kind=JobKind.BACKUP)  # never handed out
    api, _ = agent_client(queued.agent)
    assert upload(api, queued, body).status_code == 409

    cancelled = factories.JobFactory(kind=JobKind.BACKUP, agent=queued.agent, state=JobState.CANCELLED)
    assert upload(api, cancelled, body).status_code == 409
    backup = factories.BackupFactory(client=queued.client)
    restore = factories.JobFactory(
        kind=JobKind.RESTORE,
        client=queued.client,
        backup=backup,
        state=JobState.RUNNING,
        lease_expires_at=timezone.now() + timedelta(hours=1),
    )
    assert upload(api, restore, body).status_code == 409


def test_a_backup_failed_for_its_lease_may_still_send_its_file_list(running, index, index_root):
    job, api = running
    body, _ = index
    Job.objects.filter(pk=job.pk).update(
        state=JobState.FAILED, error_class=ErrorClass.LEASE_EXPIRED, lease_expires_at=None
    )

    assert upload(api, job, body).status_code == 204


def test_a_report_without_its_upload_records_the_backup_without_a_file_list(running, index):
    job, api = running
    _, summary = index

    response = complete(api, job, index=summary)

    assert response.status_code == 200
    backup = Backup.objects.get(job=job)
    assert not backup.has_file_list
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert "file list not received: this point restores whole" in job.log_tail


def test_an_upload_after_the_report_is_attached_when_the_report_comes_again(running, index):
    job, api = running
    body, summary = index
    complete(api, job, index=summary)

    assert upload(api, job, body).status_code == 204
    again = complete(api, job, index=summary)

    assert again.status_code == 200
    assert Backup.objects.get(job=job).has_file_list


def test_an_upload_of_another_size_than_reported_is_not_attached(running, index):
    job, api = running
    body, summary = index
    upload(api, job, body)

    response = complete(api, job, index={**summary, "size": summary["size"] + 1})

    assert response.status_code == 200
    assert not Backup.objects.get(job=job).has_file_list


@pytest.mark.parametrize(
    "malformed",
    [
        "index.bpi",
        {"format": 2, "kind": "files", "entries": 1, "size": 1, "sha256": SHA},
        {"format": 1, "kind": "tape", "entries": 1, "size": 1, "sha256": SHA},
        {"format": 1, "kind": "files", "entries": -1, "size": 1, "sha256": SHA},
        {"format": 1, "kind": "files", "entries": 1, "size": 1.5, "sha256": SHA},
        {"format": True, "kind": "files", "entries": 1, "size": 1, "sha256": SHA},
        {"format": 1, "kind": "files", "entries": 1, "size": 1, "sha256": "XYZ"},
        [1, 2, 3],
    ],
)
def test_a_malformed_index_in_the_report_is_not_a_400(running, malformed):
    job, api = running

    response = complete(api, job, index=malformed)

    assert response.status_code == 200, response.json()
    assert not Backup.objects.get(job=job).has_file_list
    job.refresh_from_db()
    assert "file list not received" in job.log_tail


def test_a_report_without_index_is_as_before(running):
    job, api = running

    assert complete(api, job).status_code == 200
    job.refresh_from_db()
    assert not Backup.objects.get(job=job).has_file_list
    assert "file list" not in job.log_tail


def test_a_restore_job_carries_its_selection_to_the_agent(db):
    backup = factories.BackupFactory()
    agent = backup.client.agent
    job = jobs.queue_restore(
        backup, agent=agent, target_location="/srv/restore", overwrite=False, paths=["/srv/data/a.txt"]
    )
    api, _ = agent_client(agent)

    polled = api.post("/api/agent/v1/poll", {"version": "0.1.0", "protocol": 3}, format="json").json()

    (payload,) = [p for p in polled["jobs"] if p["id"] == job.pk]
    assert payload["target"] == {"location": "/srv/restore", "overwrite": False, "paths": ["/srv/data/a.txt"]}


# --- removal ------------------------------------------------------------------------------------


def test_a_deleted_backup_loses_its_file_list(running, index, django_capture_on_commit_callbacks):
    job, api = running
    body, summary = index
    upload(api, job, body)
    with django_capture_on_commit_callbacks(execute=True):
        complete(api, job, index=summary)
    backup = Backup.objects.get(job=job)
    assert file_lists.index_file(job.pk).exists()
    Backup.objects.filter(pk=backup.pk).update(expires_at=backup.taken_at + timedelta(seconds=1))
    later = timezone.now() + timedelta(minutes=1)
    assert retention.expire_due(now=later) == 1
    removal = Job.objects.get(kind=JobKind.EXPIRE, backup=backup)
    (claimed,) = jobs.claim(job.agent, now=later)
    assert claimed.pk == removal.pk

    with django_capture_on_commit_callbacks(execute=True):
        jobs.complete_success(job.agent, removal.pk, report=None, now=later)

    backup.refresh_from_db()
    assert backup.status == BackupStatus.DELETED
    assert not backup.has_file_list
    assert not file_lists.index_file(job.pk).exists()


def test_uploads_whose_job_never_reported_are_removed_after_a_day(running, index, index_root):
    job, api = running
    body, _ = index
    upload(api, job, body)
    (stale,) = (index_root / "incoming").iterdir()
    fresh = index_root / "incoming" / "job-999999-abc.bpi"
    fresh.write_bytes(b"x")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))

    assert file_lists.purge_incoming() == 1

    assert incoming(index_root) == [fresh.name]
