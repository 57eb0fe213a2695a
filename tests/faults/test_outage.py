"""A portal outage longer than the lease: reaped, then the spooled success is accepted late."""

from __future__ import annotations

import sys

import pytest

from catalog.choices import ErrorClass, JobState, Plugin
from catalog.models import Backup, Job
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e

# About 6 s of output: the outage starts after the first progress and outlasts the 3 s lease.
SLOW_BACKUP = [
    sys.executable,
    "-c",
    "import sys, time\nfor _ in range(60):\n    sys.stdout.buffer.write(b'x' * 65536)\n"
    "    sys.stdout.flush()\n    time.sleep(0.1)\n",
]
RESTORE = [sys.executable, "-c", "import sys\nsys.stdin.buffer.read()\n"]


def test_outage_longer_than_the_lease_then_the_spooled_report_is_accepted(tmp_path, proxy, settings):
    settings.PORTAL_JOB_LEASE_SECONDS = 3
    settings.PORTAL_RETRY_BASE_SECONDS = 300  # the retry waits; the late report must cancel it
    settings.PORTAL_AGENT_POLL_SECONDS = 1
    setup = scenario.build(
        tmp_path, plugin=Plugin.COMMAND, options={"backup_argv": SLOW_BACKUP, "restore_argv": RESTORE}
    )
    agent = harness.Agent(tmp_path / "agent", proxy.url)
    agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    job = jobs.queue_backup(setup.client)

    process = agent.start()
    try:
        harness.outage_past_the_lease(job, proxy)
        assert jobs.reap_expired_leases() == 1
        job.refresh_from_db()
        assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)
        retry = Job.objects.get(retry_of=job)
        assert retry.state == JobState.QUEUED

        # The backup finishes during the outage: its report goes to the spool, and the
        # client's in-line retries give up, so only the spool can deliver it.
        harness.wait_for(agent.spooled, timeout=20, what="the report to be spooled")
        harness.wait_for(
            lambda: "report kept in the spool" in agent.log_text(),
            timeout=15,
            what="the in-line retries to end",
        )
        proxy.pass_()
        harness.wait_for(
            lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(),
            timeout=15,
            what="the spooled report to be re-sent and accepted",
        )
    finally:
        harness.Agent.stop(process)

    assert Backup.objects.count() == 1
    backup = Backup.objects.get(job=job)
    assert scenario.sha256_of(scenario.stored_data_file(setup.storage, backup)) == backup.sha256
    retry.refresh_from_db()
    assert retry.state == JobState.CANCELLED, "the queued retry of a job that did succeed must be cancelled"
    assert agent.spooled() == []
    assert harness.leftovers(setup.storage) == []
