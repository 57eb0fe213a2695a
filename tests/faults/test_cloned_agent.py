"""A cloned agent: a copied config on a second host is refused (409 agent_cloned) and runs nothing."""

from __future__ import annotations

import json

import pytest

from catalog.choices import AlertKind, JobState
from catalog.models import Agent as AgentRow
from catalog.models import Alert, Backup
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e

CLONE_HOST = "clone-of-e2e-agent"


def test_copied_config_on_a_second_host_is_refused_and_the_original_keeps_working(
    tmp_path, live_server, proxy
):
    setup = scenario.build(tmp_path)
    original = harness.Agent(tmp_path / "agent", live_server.url)
    original.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    assert original.run_once().returncode == 0  # enrolled and polling: the instance is bound
    copy = original.clone(tmp_path / "copy", server=proxy.url, host=CLONE_HOST)
    job = jobs.queue_backup(setup.client)

    result = copy.run_once()

    assert result.returncode != 0
    polls = [e for e in proxy.exchanges if e.path.endswith("/poll")]
    assert polls and all(e.status == 409 for e in polls), [(e.status, e.response) for e in polls]
    assert json.loads(polls[0].response)["code"] == "agent_cloned"
    job.refresh_from_db()
    assert job.state == JobState.QUEUED, "the copy must not be handed a job"
    assert copy.spooled() == []
    bound = AgentRow.objects.get()
    assert bound.instance_host and bound.instance_host != CLONE_HOST
    alert = Alert.objects.get(kind=AlertKind.AGENT_CLONED)
    assert CLONE_HOST in alert.message and bound.instance_host in alert.message, alert.message

    result = original.run_once()

    assert result.returncode == 0, result.stderr[-3000:]
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert Backup.objects.filter(job=job).count() == 1
    assert copy.run_once().returncode != 0  # still refused, still idle
    assert Backup.objects.count() == 1
