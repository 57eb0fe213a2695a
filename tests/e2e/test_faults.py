"""Faults with the real agent: killed mid-backup, and a corrupted backup file."""

from __future__ import annotations

import signal
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import ErrorClass, JobState, Plugin
from catalog.models import Backup, Job
from catalog.services import jobs
from tests.e2e import scenario
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

# About 4 s of output in 64 KiB pieces: long enough to kill the agent half-way.
SLOW_BACKUP = [
    sys.executable,
    "-c",
    "import sys, time\nfor _ in range(40):\n    sys.stdout.buffer.write(b'x' * 65536)\n"
    "    sys.stdout.flush()\n    time.sleep(0.1)\n",
]
RESTORE_TO_FILE = [
    sys.executable,
    "-c",
    "import shutil, sys\nshutil.copyfileobj(sys.stdin.buffer, open(sys.argv[1], 'wb'))\n",
    "{target}",
]


def test_agent_killed_mid_backup_leaves_nothing_complete_and_the_retry_succeeds(
    agent_cli, tmp_path, settings
):
    settings.PORTAL_RETRY_BASE_SECONDS = 0
    setup = scenario.build(
        tmp_path, plugin=Plugin.COMMAND, options={"backup_argv": SLOW_BACKUP, "restore_argv": RESTORE_TO_FILE}
    )
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    setup.client.refresh_from_db()
    job = jobs.queue_backup(setup.client)

    process = agent_cli.start()
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING, bytes_done__gt=0).exists(),
        what="the backup to report progress",
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    assert not Backup.objects.exists()
    client_folder = setup.storage / setup.application.slug / setup.client.name
    complete = (
        [p.name for p in client_folder.iterdir() if not p.name.startswith(".")]
        if client_folder.exists()
        else []
    )
    assert complete == [], "a killed backup must not leave a folder that looks complete"

    # Nobody extends the lease any more; let it run out rather than wait PORTAL_JOB_LEASE_SECONDS.
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert jobs.reap_expired_leases() == 1
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)
    retry = Job.objects.get(retry_of=job)

    result = agent_cli.run_once()

    assert result.returncode == 0, result.stderr[-3000:]
    retry.refresh_from_db()
    assert retry.state == JobState.SUCCEEDED, retry.error_message
    backup = Backup.objects.get(job=retry)
    assert backup.size_bytes == 40 * 65536
    assert scenario.sha256_of(scenario.stored_data_file(setup.storage, backup)) == backup.sha256


def test_corrupted_backup_fails_restore_with_checksum_error_and_leaves_target_untouched(agent_cli, tmp_path):
    setup = scenario.build(tmp_path)
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    setup.client.refresh_from_db()
    job = jobs.queue_backup(setup.client)
    assert agent_cli.run_once().returncode == 0
    backup = Backup.objects.get(job=job)
    data_file = scenario.stored_data_file(setup.storage, backup)
    scenario.flip_middle_byte(data_file)
    target = tmp_path / "restore-target"
    target.mkdir()
    (target / "keep.txt").write_text("existing data\n")
    before = scenario.tree(target)

    restore = jobs.queue_restore(backup, agent=job.agent, target_location=str(target), overwrite=True)
    agent_cli.run_once()

    restore.refresh_from_db()
    assert restore.state == JobState.FAILED
    assert restore.error_class == ErrorClass.CHECKSUM_MISMATCH, restore.error_message
    assert scenario.tree(target) == before
