"""A scheduled backup and a restore, end to end, on each task backend.

The live server answers the real agent; a real worker (django-q2's qcluster, or
a Celery worker on Redis) runs the scheduler; the restored bytes are compared
with the originals.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import ClientStatus, JobKind, JobState, JobTrigger
from catalog.models import Backup, BackupClient, Job
from catalog.services import jobs
from core.queue import enqueue
from tests.e2e import scenario
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("worker", ["django_q", "celery"], indirect=True)
def test_scheduled_backup_then_restore_returns_the_same_bytes(worker, agent_cli, tmp_path):
    setup = scenario.build(tmp_path)
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    client = BackupClient.objects.get(pk=setup.client.pk)
    assert client.status == ClientStatus.ACTIVE

    # The schedule says "due now"; the worker's scheduler queues the job.
    BackupClient.objects.filter(pk=client.pk).update(next_backup_at=timezone.now() - timedelta(minutes=1))
    enqueue("catalog.tasks.schedule_backups")
    job = wait_for(
        lambda: Job.objects.filter(client=client, kind=JobKind.BACKUP).first(),
        timeout=45,
        what=f"the {worker} worker to queue the scheduled backup",
    )
    assert job.trigger == JobTrigger.SCHEDULE

    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr

    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error_message, result.stderr[-3000:])
    backup = Backup.objects.get(job=job)
    data_file = scenario.stored_data_file(setup.storage, backup)
    assert scenario.sha256_of(data_file) == backup.sha256
    assert backup.stored_size_bytes == data_file.stat().st_size

    target = tmp_path / "restored"
    restore = jobs.queue_restore(backup, agent=job.agent, target_location=str(target), overwrite=False)
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr

    restore.refresh_from_db()
    assert restore.state == JobState.SUCCEEDED, (restore.error_message, result.stderr[-3000:])
    restored_root = target / str(setup.source).lstrip("/")
    assert scenario.tree(restored_root) == scenario.tree(setup.source)
