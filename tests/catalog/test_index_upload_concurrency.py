"""A file list sent twice at once, then its report sent twice at once (an agent's retry racing its
first attempt): one backup, with its file list, and nothing left in the incoming folder.

Real threads with their own connections; on PostgreSQL above all (make test runs both).
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from catalog.choices import JobKind, JobState
from catalog.models import Backup, Job
from catalog.services import file_lists, jobs
from tests import factories
from tests.helpers import agent_client, run_at_once
from tests.index_files import WEBSHOP, complete, upload, write_files_index


@pytest.mark.django_db(transaction=True)
def test_two_uploads_and_two_reports_at_once_make_one_point_with_its_file_list(tmp_path, index_root):
    job = factories.JobFactory(kind=JobKind.BACKUP)
    _, token = agent_client(job.agent)
    jobs.claim(job.agent)
    summary = write_files_index(tmp_path / "index.bpi", WEBSHOP)
    body = (tmp_path / "index.bpi").read_bytes()

    def speaking_for_the_agent() -> APIClient:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return api

    def upload_again():
        return upload(speaking_for_the_agent(), job, body).status_code

    def complete_again():
        return complete(speaking_for_the_agent(), job, index=summary).status_code

    uploaded = run_at_once([upload_again, upload_again])
    completed = run_at_once([complete_again, complete_again])

    assert uploaded == [204, 204]
    assert completed == [200, 200]
    assert Job.objects.get(pk=job.pk).state == JobState.SUCCEEDED
    backup = Backup.objects.get(job=job)
    assert (backup.index_entries, backup.index_sha256) == (summary["entries"], summary["sha256"])
    listing = file_lists.list_folder(backup, "/srv/webshop/media")
    names = [entry.name for entry in listing.entries]
    assert names == ["invoice-2026-01.pdf", "invoice-2026-02.pdf", "logo.png"]
    assert list((index_root / "incoming").iterdir()) == []
