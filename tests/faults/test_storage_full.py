"""Storage full: a big backup fails disk_full and leaves no partial file; a small one then fits."""

from __future__ import annotations

import sys

import pytest

from catalog.choices import ErrorClass, JobState, Plugin
from catalog.models import Backup
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e


def output_of(size: int) -> list[str]:
    return [sys.executable, "-c", f"import sys\nsys.stdout.buffer.write(b'x' * {size})\n"]


RESTORE = [sys.executable, "-c", "import sys\nsys.stdin.buffer.read()\n"]


def test_storage_full_fails_disk_full_without_leftovers_then_a_small_backup_fits(
    tmp_path, live_server, settings
):
    settings.PORTAL_RETRY_BASE_SECONDS = 300  # the retry of the big one stays out of the way
    setup = scenario.build(
        tmp_path, plugin=Plugin.COMMAND, options={"backup_argv": output_of(8 << 20), "restore_argv": RESTORE}
    )
    with harness.tmpfs(setup.storage, size="2m"):
        agent = harness.Agent(tmp_path / "agent", live_server.url)
        agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
        small = harness.add_client(
            setup.client,
            "small",
            plugin=Plugin.COMMAND,
            options={"backup_argv": output_of(64 << 10), "restore_argv": RESTORE},
        )
        big_job = jobs.queue_backup(setup.client)

        agent.run_once()

        big_job.refresh_from_db()
        assert (big_job.state, big_job.error_class) == (JobState.FAILED, ErrorClass.DISK_FULL), (
            big_job.error_message
        )
        assert "no space left on device" in big_job.error_message.lower()
        assert not Backup.objects.exists()
        assert harness.leftovers(setup.storage) == [], "a failed backup must not leave its partial file"

        small_job = jobs.queue_backup(small)
        result = agent.run_once()

        small_job.refresh_from_db()
        assert small_job.state == JobState.SUCCEEDED, (small_job.error_message, result.stderr[-3000:])
        backup = Backup.objects.get()
        assert backup.job_id == small_job.pk and backup.size_bytes == 64 << 10
        assert scenario.sha256_of(scenario.stored_data_file(setup.storage, backup)) == backup.sha256
        assert harness.leftovers(setup.storage) == []
