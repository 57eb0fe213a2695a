"""A lost poll response: the jobs it claimed are re-queued at the next poll, not after the lease."""

from __future__ import annotations

import json
import time

import pytest

from catalog.choices import JobKind, JobState, Plugin
from catalog.models import Backup, Job
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e

LEASE = 60


def test_jobs_of_a_lost_poll_response_are_requeued_at_the_next_poll_and_complete(tmp_path, proxy, settings):
    settings.PORTAL_JOB_LEASE_SECONDS = LEASE
    settings.PORTAL_RETRY_BASE_SECONDS = 0
    settings.PORTAL_AGENT_POLL_SECONDS = 1
    setup = scenario.build(tmp_path)
    agent = harness.Agent(tmp_path / "agent", proxy.url)
    agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    docs = harness.add_client(
        setup.client, "docs", plugin=Plugin.FILES, options={"paths": [str(setup.source / "docs")]}
    )
    first = [jobs.queue_backup(setup.client), jobs.queue_backup(docs)]

    proxy.swallow(count=1, path_suffix="/poll")
    started = time.monotonic()
    process = agent.start()
    try:
        harness.wait_for(lambda: proxy.swallowed("/poll"), timeout=15, what="the first poll")
        lost = proxy.swallowed("/poll")[0]
        assert lost.status == 200 and b'"id"' in lost.response, lost.response
        assert Job.objects.filter(pk__in=[j.pk for j in first], state=JobState.RUNNING).count() == 2

        def both_backed_up() -> bool:
            return Backup.objects.filter(client__in=[setup.client, docs]).count() == 2

        harness.wait_for(
            both_backed_up, timeout=LEASE / 3, what="both jobs to complete after the lost response"
        )
        elapsed = time.monotonic() - started
    finally:
        harness.Agent.stop(process)

    polls = [e for e in proxy.exchanges if e.path.endswith("/poll")]
    assert len(json.loads(polls[1].response)["jobs"]) == 2, (
        "the very next poll (running: []) must re-queue the lost jobs and hand them out again; "
        f"polls answered: {[len(json.loads(e.response).get('jobs', [])) for e in polls]}"
    )
    assert elapsed < LEASE / 3, f"took {elapsed:.0f} s: the jobs waited for their lease"
    for client in (setup.client, docs):
        backups = Job.objects.filter(client=client, kind=JobKind.BACKUP)
        assert backups.filter(state=JobState.SUCCEEDED).count() == 1
        assert Backup.objects.filter(client=client).count() == 1
        assert not backups.filter(state__in=JobState.open()).exists(), "no job may still wait for its lease"
