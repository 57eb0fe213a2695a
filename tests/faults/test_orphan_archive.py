"""A report lost for good leaves its archive on storage: listed for the team, removed after the grace."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import Plugin
from catalog.models import Backup, Job, OrphanArchive
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e

# About 3 s of output: long enough for the outage to start after the first progress report.
SLOW_BACKUP = [
    sys.executable,
    "-c",
    "import sys, time\nfor _ in range(30):\n    sys.stdout.buffer.write(b'x' * 65536)\n"
    "    sys.stdout.flush()\n    time.sleep(0.1)\n",
]
RESTORE = [sys.executable, "-c", "import sys\nsys.stdin.buffer.read()\n"]


def test_an_archive_whose_report_came_too_late_is_listed_then_removed(tmp_path, proxy, settings):
    settings.PORTAL_JOB_LEASE_SECONDS = 3
    settings.PORTAL_RETRY_BASE_SECONDS = 0
    settings.PORTAL_AGENT_POLL_SECONDS = 1
    setup = scenario.build(
        tmp_path, plugin=Plugin.COMMAND, options={"backup_argv": SLOW_BACKUP, "restore_argv": RESTORE}
    )
    agent = harness.Agent(tmp_path / "agent", proxy.url)
    agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    agent.edit(archive_report_interval=1)
    first = jobs.queue_backup(setup.client)

    process = agent.start()
    try:
        harness.outage_past_the_lease(first, proxy)
        assert jobs.reap_expired_leases() == 1
        # The retry has started by the time the first report comes back: that report is
        # lease_lost for good, and its archive is known to no backup.
        retry = Job.objects.get(retry_of=first)
        assert [job.pk for job in jobs.claim(retry.agent)] == [retry.pk]
        harness.wait_for(agent.spooled, timeout=20, what="the first backup's report to be spooled")
        proxy.pass_()

        location = jobs.backup_destination(first)
        harness.wait_for(
            lambda: OrphanArchive.objects.filter(location=location).exists(),
            timeout=20,
            what="the agent's archive report to list the orphan",
        )
        assert (setup.storage / location).exists(), "not removed before the grace period"
        OrphanArchive.objects.filter(location=location).update(
            removal_due_at=timezone.now() - timedelta(seconds=1)
        )
        harness.wait_for(
            lambda: not (setup.storage / location).exists(),
            timeout=20,
            what="the agent to remove the orphan once due",
        )
        harness.wait_for(
            lambda: not OrphanArchive.objects.filter(location=location).exists(),
            timeout=20,
            what="the next report to clear the list",
        )
    finally:
        harness.Agent.stop(process)

    assert not Backup.objects.filter(job=first).exists()
    assert agent.spooled() == []
    assert harness.leftovers(setup.storage) == []
