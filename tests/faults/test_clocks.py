"""An agent whose clock is 3 h behind: durations come from the portal's clock, its times are kept."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from catalog.choices import JobState
from catalog.models import Backup
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e

SKEW = timedelta(hours=3)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_agent_clock_three_hours_behind_keeps_durations_non_negative(tmp_path, proxy):
    sent: dict[str, datetime] = {}

    def skew_clock(path: str, data: dict) -> dict:
        if path.endswith("/complete"):
            for key in ("started_at", "finished_at"):
                if isinstance(data.get(key), str):
                    sent[key] = parse(data[key]) - SKEW
                    data[key] = sent[key].strftime("%Y-%m-%dT%H:%M:%SZ")
        return data

    proxy.rewrite = skew_clock
    setup = scenario.build(tmp_path)
    agent = harness.Agent(tmp_path / "agent", proxy.url)
    agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    job = jobs.queue_backup(setup.client)

    result = agent.run_once()

    assert result.returncode == 0, result.stderr[-3000:]
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert Backup.objects.filter(job=job).count() == 1
    assert job.started_at <= job.finished_at, (job.started_at, job.finished_at)
    assert job.duration >= timedelta(0)
    assert (job.reported_started_at, job.reported_finished_at) == (sent["started_at"], sent["finished_at"])
