"""Agents older than the oldest protocol the portal speaks are refused (426 agent_unsupported), clearly.

The portal: every call refused with the way out in the message, one alert however often the agent
calls, closed by its first supported poll; a current agent is not refused. The agent: it logs the
portal's message (at most once per UNSUPPORTED_LOG_EVERY), polls slowly and sends no reports meanwhile.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from backup_agent import PROTOCOL_VERSION
from backup_agent.client import AGENT_UNSUPPORTED
from backup_agent.errors import PortalError
from backup_agent.runner import UNSUPPORTED_LOG_EVERY, UNSUPPORTED_RETRY, unsupported_retry_delay
from backup_agent.runner import Agent as Runner
from catalog.choices import AlertKind, JobKind
from catalog.models import Agent, Alert
from tests import factories
from tests.agent.helpers import config
from tests.helpers import agent_client

POLL = "/api/agent/v1/poll"


@pytest.fixture
def oldest(monkeypatch):
    """This portal speaks protocol 5 and newer (the agent in this tree speaks 4)."""
    monkeypatch.setattr(Agent, "OLDEST_PROTOCOL", PROTOCOL_VERSION + 1)
    return PROTOCOL_VERSION + 1


@pytest.fixture
def agent(app):
    return factories.AgentFactory(applications=[app], version="4.0.0", protocol=PROTOCOL_VERSION)


def poll_body(protocol: int, **extra) -> dict:
    return {"version": "4.0.0", "protocol": protocol, "plugins": ["files"], "running": [], **extra}


def runner_config(tmp_path):
    return config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state"))


def open_alerts(agent):
    return list(Alert.objects.filter(kind=AlertKind.AGENT_UNSUPPORTED, agent=agent, resolved_at__isnull=True))


def test_an_old_agent_is_refused_with_the_way_out_and_one_alert(agent, oldest, settings):
    settings.PORTAL_BASE_URL = "https://backup.example.com"
    api, _ = agent_client(agent)
    for _ in range(2):
        answer = api.post(POLL, poll_body(PROTOCOL_VERSION), format="json")
        assert answer.status_code == 426
        body = answer.json()
        assert body["code"] == "agent_unsupported"
        expected = f"speaks agent protocol {oldest} or newer; this agent speaks {PROTOCOL_VERSION}"
        assert expected in body["detail"]
        assert "`backup-agent upgrade`" in body["detail"]
        assert "https://backup.example.com/agent/install.sh" in body["detail"]
    (alert,) = open_alerts(agent)  # polled twice: still one alert
    assert alert.agent_id == agent.pk and alert.application_id == agent.applications.get().pk
    assert agent.hostname in alert.message and "backup-agent upgrade" in alert.message
    agent.refresh_from_db()
    assert agent.last_seen_at is not None  # the refused agent's poll is recorded: the admin shows it


def test_the_short_door_refuses_too(agent, oldest):
    """The plain-body poll (the idle steady state) goes to the view that words the refusal."""
    _, token = agent_client(agent)
    raw = Client().post(
        POLL, json.dumps(poll_body(PROTOCOL_VERSION)), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip
    assert raw.status_code == 426 and raw.json()["code"] == "agent_unsupported"
    assert len(open_alerts(agent)) == 1


def test_every_other_call_of_a_refused_agent_is_refused(agent, oldest):
    job = factories.JobFactory(kind=JobKind.BACKUP, agent=agent)
    api, _ = agent_client(agent)
    progress = api.post(f"/api/agent/v1/jobs/{job.pk}/progress", {"bytes_done": 1}, format="json")
    complete = api.post(
        f"/api/agent/v1/jobs/{job.pk}/complete", {"status": "failed", "error": "x"}, format="json"
    )
    for answer in (progress, complete):
        assert answer.status_code == 426 and answer.json()["code"] == "agent_unsupported"


def test_an_old_agent_cannot_enrol(db, oldest):
    answer = Client().post(
        "/api/agent/v1/enrol",
        {"token": "bpe_x", "hostname": "old.example.com", "version": "3.2.0", "protocol": PROTOCOL_VERSION},
        content_type="application/json",
    )
    assert answer.status_code == 426 and "backup-agent upgrade" in answer.json()["detail"]


def test_a_current_agent_is_not_refused_and_closes_the_alert(agent, oldest):
    api, _ = agent_client(agent)
    assert api.post(POLL, poll_body(PROTOCOL_VERSION), format="json").status_code == 426
    assert len(open_alerts(agent)) == 1
    # Upgraded: its first poll speaks the new protocol and passes, whatever the row held.
    answer = api.post(POLL, poll_body(oldest), format="json")
    assert answer.status_code == 200 and answer.json()["jobs"] == []
    assert open_alerts(agent) == []
    agent.refresh_from_db()
    assert agent.protocol == oldest


def test_today_every_protocol_since_1_is_spoken(agent):
    """OLDEST_PROTOCOL is honest: the portal keeps its compatibility paths for protocols 1 to 3."""
    assert Agent.OLDEST_PROTOCOL == 1
    api, _ = agent_client(agent)
    assert api.post(POLL, {"version": "0.9.0", "plugins": ["files"]}, format="json").status_code == 200
    assert api.post(POLL, poll_body(PROTOCOL_VERSION), format="json").status_code == 200
    assert open_alerts(agent) == []


# --- the agent's side ------------------------------------------------------------------------


class RefusingClient:
    """The portal as an old agent meets it: every call 426 agent_unsupported."""

    MESSAGE = "This portal speaks agent protocol 5 or newer; this agent speaks 4: `backup-agent upgrade`"

    def __init__(self) -> None:
        self.polls = 0
        self.reports = 0

    def poll(self, *args, **kwargs):
        self.polls += 1
        raise PortalError(426, AGENT_UNSUPPORTED, self.MESSAGE)

    def complete(self, *args, **kwargs):
        self.reports += 1
        raise PortalError(426, AGENT_UNSUPPORTED, self.MESSAGE)


def test_the_agent_logs_the_refusal_once_per_interval_and_backs_off(tmp_path, caplog):
    client = RefusingClient()
    runner = Runner(runner_config(tmp_path), client=client)
    now = [1000.0]
    runner.clock = lambda: now[0]
    caplog.set_level(logging.ERROR, logger="backup_agent.runner")
    for _ in range(3):
        with pytest.raises(PortalError):
            runner.poll()
        now[0] += 60
    refusals = [r for r in caplog.records if "the portal refuses this agent" in r.getMessage()]
    assert len(refusals) == 1 and "`backup-agent upgrade`" in refusals[0].getMessage()
    assert runner.unsupported
    now[0] += UNSUPPORTED_LOG_EVERY
    with pytest.raises(PortalError):
        runner.poll()
    assert len([r for r in caplog.records if "the portal refuses this agent" in r.getMessage()]) == 2
    # Slowly, not in a crash loop: between half and all of UNSUPPORTED_RETRY.
    assert unsupported_retry_delay(lambda: 0.0) == UNSUPPORTED_RETRY / 2
    assert unsupported_retry_delay(lambda: 1.0) == UNSUPPORTED_RETRY >= 300


def test_the_run_loop_keeps_polling_slowly_and_sends_no_reports(tmp_path, monkeypatch):
    client = RefusingClient()
    runner = Runner(runner_config(tmp_path), client=client)
    runner.spool.put(7, {"status": "failed", "error": "x"})
    waits = []

    def wait(delay):
        waits.append(delay)
        if len(waits) == 3:
            runner.stop_event.set()
        return runner.stop_event.is_set()

    monkeypatch.setattr(Runner, "_spool_timer", lambda self: None)  # the loop alone, on a counted clock
    monkeypatch.setattr(runner.stop_event, "wait", wait)
    assert runner.run_forever() == 0
    assert client.polls == 3
    # The first loop resends before it knows; then the spool waits for the upgrade.
    assert client.reports == 1
    assert all(UNSUPPORTED_RETRY / 2 <= delay <= UNSUPPORTED_RETRY for delay in waits)
