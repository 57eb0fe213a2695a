"""Agents stay current, on the portal's side: versions compared, outdated agents shown, the upgrade offer.

The offer (the poll's ``upgrade``) is for agents the backup team switched to automatic upgrades,
only when outdated; the switch is the team's alone; the runner takes the offer between jobs only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import backup_agent
from backup_agent import runner as runner_module
from backup_agent import upgrade
from backup_agent.runner import Agent as Runner
from catalog import agent_versions
from catalog.admin import AgentAdmin
from catalog.choices import AgentAction
from catalog.models import Agent
from tests import factories
from tests.agent.helpers import config
from tests.helpers import agent_client

SHIPPED = backup_agent.__version__
POLL = "/api/agent/v1/poll"


def test_versions_compare_as_numbers():
    assert agent_versions.parse("4.0.10") > agent_versions.parse("4.0.9")
    assert agent_versions.parse("4.0") == agent_versions.parse("4.0.0") == (4,)
    assert agent_versions.parse("4.1.0rc1") == (4, 1) and agent_versions.parse("") == ()
    assert agent_versions.is_older("3.2.0", "4.0.0") and not agent_versions.is_older("4.0.0", "4.0")
    assert not agent_versions.is_outdated(SHIPPED)
    # Never polled: no version to judge, nothing to upgrade; reported but unreadable: older.
    assert not agent_versions.is_outdated("") and agent_versions.status("", 4) == agent_versions.UNKNOWN
    assert agent_versions.is_outdated("garbage")
    assert agent_versions.shipped_version() == SHIPPED
    # The agent's own comparison (it cannot import the portal) says the same.
    for version in ("4.0.10", "4.0", "4.1.0rc1", "", "3.2.0"):
        assert upgrade.version_key(version) == agent_versions.parse(version)


def test_status(monkeypatch):
    assert agent_versions.status(SHIPPED, backup_agent.PROTOCOL_VERSION) == agent_versions.CURRENT
    assert agent_versions.status("3.2.0", 3) == agent_versions.OUTDATED
    assert agent_versions.status("9.0.0", 9) == agent_versions.CURRENT  # newer than shipped: not outdated
    monkeypatch.setattr(Agent, "OLDEST_PROTOCOL", 4)
    assert agent_versions.status("3.2.0", 3) == agent_versions.UNSUPPORTED


# --- the poll's upgrade offer -----------------------------------------------------------------


def poll(agent, version: str, **extra):
    """Through the short door (a plain body) and through the DRF view (a body with archives): equal."""
    _, token = agent_client(agent)
    body = {"version": version, "protocol": backup_agent.PROTOCOL_VERSION, "plugins": ["files"], **extra}
    answer = Client().post(
        POLL, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert answer.status_code == 200, answer.content
    return answer.json()


@pytest.mark.parametrize("extra", [{}, {"archives": []}], ids=["short door", "view"])
def test_the_offer_follows_the_switch_and_the_version(db, extra):
    agent = factories.AgentFactory(version="3.2.0")
    assert "upgrade" not in poll(agent, "3.2.0", **extra)  # switch off (the default)
    assert Agent._meta.get_field("auto_upgrade").default is False
    Agent.objects.filter(pk=agent.pk).update(auto_upgrade=True)
    agent.refresh_from_db()
    assert poll(agent, "3.2.0", **extra)["upgrade"] == {"version": SHIPPED, "url": "/agent/backup-agent.pyz"}
    assert "upgrade" not in poll(agent, SHIPPED, **extra)  # current: nothing to offer


def test_an_idle_poll_with_the_switch_on_reads_nothing_more(db, django_assert_max_num_queries):
    agent = factories.AgentFactory(version=SHIPPED, auto_upgrade=True)
    _, token = agent_client(agent)
    body = json.dumps({"version": "3.2.0", "protocol": backup_agent.PROTOCOL_VERSION, "plugins": ["files"]})
    client = Client()
    client.post(POLL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    # The offer is computed from the row the token read and the body: no query of its own.
    with django_assert_max_num_queries(2):
        answer = client.post(
            POLL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
    assert "upgrade" in answer.json()


# --- the runner takes it between jobs ----------------------------------------------------------


class OfferingClient:
    def __init__(self, jobs=()):
        self.jobs = list(jobs)

    def poll(self, *args, **kwargs):
        jobs, self.jobs = self.jobs, []
        return {"jobs": jobs, "poll_after": 1, "upgrade": {"version": "4.0.1"}}


def test_the_runner_upgrades_only_between_jobs(tmp_path, monkeypatch):
    calls = []

    def fake_upgrade(cfg, **kwargs):
        calls.append(kwargs)
        return upgrade.Result(tmp_path / "backup-agent.pyz", SHIPPED, "4.0.1", replaced=True)

    monkeypatch.setattr(upgrade, "upgrade", fake_upgrade)
    monkeypatch.setattr(upgrade, "automatic_blocker", lambda: None)  # install.sh's zipapp, under systemd
    runner = Runner(
        config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state"), auto_upgrade=True),
        client=OfferingClient(),
    )
    runner.poll()
    runner._running[41] = object()  # a job runs: never during one
    assert runner.upgrade_if_offered() is False and calls == []
    del runner._running[41]
    assert runner.upgrade_if_offered() is True
    # The unit restarts it: no systemctl from inside.
    assert calls == [{"automatic": True, "client": None}]
    assert runner.exit_code == upgrade.RESTART_EXIT and runner.stop_event.is_set()


def test_without_the_servers_consent_the_portals_offer_is_not_taken(tmp_path, monkeypatch, caplog):
    """A portal taken over can switch automatic upgrades on; only the server's admin lets the agent follow."""
    monkeypatch.setattr(upgrade, "upgrade", lambda *a, **kw: pytest.fail("no upgrade without consent"))
    monkeypatch.setattr(upgrade, "automatic_blocker", lambda: None)  # install.sh's zipapp, under systemd
    runner = Runner(
        config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state")), client=OfferingClient()
    )
    runner.poll()

    assert runner.upgrade_if_offered() is False
    assert runner.upgrade_if_offered() is False
    assert caplog.text.count("has not allowed automatic upgrades") == 1
    assert runner.exit_code == 0 and not runner.stop_event.is_set()


def test_the_runner_runs_the_jobs_of_the_poll_first(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(upgrade, "upgrade", lambda cfg, **kw: calls.append(kw))
    runner = Runner(
        config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state")),
        client=OfferingClient(jobs=[{"id": 5, "kind": "backup"}]),
    )
    started = []
    monkeypatch.setattr(runner, "start_job", started.append)
    monkeypatch.setattr(Runner, "_spool_timer", lambda self: None)
    waits = []

    def wait(delay):
        waits.append(delay)
        runner.stop_event.set()
        return True

    monkeypatch.setattr(runner.stop_event, "wait", wait)
    runner.run_forever()
    assert started and calls == []  # the poll brought a job: no upgrade in that round


def test_a_failed_automatic_upgrade_is_tried_again_later_not_at_every_poll(tmp_path, monkeypatch):
    attempts = []

    def failing(cfg, **kwargs):
        attempts.append(1)
        raise upgrade.UpgradeError("the download's SHA-256 is wrong; nothing changed")

    monkeypatch.setattr(upgrade, "upgrade", failing)
    monkeypatch.setattr(upgrade, "automatic_blocker", lambda: None)
    runner = Runner(
        config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state"), auto_upgrade=True),
        client=OfferingClient(),
    )
    now = [100.0]
    runner.clock = lambda: now[0]
    runner.poll()
    assert runner.upgrade_if_offered() is False
    now[0] += 60
    assert runner.upgrade_if_offered() is False
    assert len(attempts) == 1 and runner.exit_code == 0 and not runner.stop_event.is_set()


@pytest.mark.parametrize(
    ("target", "environ", "says"),
    [
        # Started by hand (or by another service manager): exit 75 would just stop it.
        ("zipapp", {}, "does not run as the systemd service"),
        # The Debian package: dpkg upgrades it, from outside the service.
        (upgrade.DEB_PYZ, {"INVOCATION_ID": "abc"}, "run `sudo backup-agent upgrade`"),
    ],
)
def test_an_agent_unable_to_upgrade_itself_says_so_once(tmp_path, monkeypatch, caplog, target, environ, says):
    pyz = tmp_path / "backup-agent.pyz"
    pyz.write_bytes(b"")
    path = pyz if target == "zipapp" else Path(target)
    monkeypatch.setattr(upgrade, "running_zipapp", lambda: path)
    for name in ("INVOCATION_ID", upgrade.NO_SYSTEMD_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(upgrade, "upgrade", lambda *a, **kw: pytest.fail("no upgrade from inside"))
    runner = Runner(
        config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state"), auto_upgrade=True),
        client=OfferingClient(),
    )
    now = [100.0]
    runner.clock = lambda: now[0]
    runner.poll()
    for _ in range(3):  # every poll offers it, for hours
        assert runner.upgrade_if_offered() is False
        now[0] += 2 * runner_module.UPGRADE_RETRY
    notices = [r for r in caplog.records if "the portal offers backup-agent 4.0.1" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelname == "WARNING" and says in notices[0].getMessage()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert runner.exit_code == 0 and not runner.stop_event.is_set()


def test_only_the_systemd_service_upgrades_itself(tmp_path, monkeypatch):
    pyz = tmp_path / "backup-agent.pyz"
    pyz.write_bytes(b"")
    assert upgrade.automatic_blocker(pyz, {"INVOCATION_ID": "abc"}) is None
    assert "does not run as the systemd service" in upgrade.automatic_blocker(pyz, {})
    no_systemd = {"INVOCATION_ID": "abc", upgrade.NO_SYSTEMD_ENV: "1"}
    assert "does not run as the systemd service" in upgrade.automatic_blocker(pyz, no_systemd)


# --- shown: admin, client page, switch ------------------------------------------------------------


def test_the_admin_marks_and_filters_outdated_agents(team_client, app):
    old = factories.AgentFactory(hostname="old.example.com", version="3.2.0", applications=[app])
    current = factories.AgentFactory(
        hostname="new.example.com", version=SHIPPED, protocol=4, applications=[app]
    )
    changelist = reverse("admin:catalog_agent_changelist")
    page = team_client.get(changelist)
    assert f"3.2.0 <strong>outdated</strong> ({SHIPPED} available)" in page.text
    outdated = team_client.get(changelist, {"version_status": "outdated"})
    assert list(outdated.context["cl"].result_list) == [old]
    assert list(team_client.get(changelist, {"version_status": "current"}).context["cl"].result_list) == [
        current
    ]


def test_the_client_page_says_an_update_is_available(owner_client, app):
    estate = factories.build_estate(app)
    Agent.objects.filter(pk=estate.agent.pk).update(version="3.2.0")
    url = reverse("catalog:client", args=[estate.client.pk])
    page = owner_client.get(url)
    assert page.status_code == 200
    expected = f"agent 3.2.0 — an update to {SHIPPED} is available: <code>backup-agent upgrade</code>"
    assert expected in page.text
    Agent.objects.filter(pk=estate.agent.pk).update(version=SHIPPED)
    assert "an update to" not in owner_client.get(url).text


def switch(client, agent, on: bool):
    data = {"applications": [a.pk for a in agent.applications.all()], "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0"}  # fmt: skip
    if on:
        data["auto_upgrade"] = "on"
    return client.post(reverse("admin:catalog_agent_change", args=[agent.pk]), data)


def test_the_team_flips_the_switch_and_it_is_audited(team_client, app):
    agent = factories.AgentFactory(version="3.2.0", applications=[app])
    assert switch(team_client, agent, True).status_code == 302
    assert Agent.objects.get(pk=agent.pk).auto_upgrade
    event = agent.events.get(action=AgentAction.AUTO_UPGRADE)
    assert event.actor_label == "backup_admin" and event.message == "automatic upgrade on"


def test_an_owner_cannot_flip_the_switch(client, owner, app, rf):
    agent = factories.AgentFactory(version="3.2.0", applications=[app])
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    owner.user_permissions.add(*Permission.objects.filter(codename__in=["view_agent", "change_agent"]))
    request = rf.get("/")
    request.user = owner
    from django.contrib import admin

    assert "auto_upgrade" in AgentAdmin(Agent, admin.site).get_readonly_fields(request, agent)
    client.force_login(owner)
    switch(client, agent, True)
    assert not Agent.objects.get(pk=agent.pk).auto_upgrade
    assert not agent.events.filter(action=AgentAction.AUTO_UPGRADE).exists()


def test_the_metrics_count_agents_by_version_status(db, monkeypatch):
    from portal.metrics.collector import PortalCollector

    factories.AgentFactory(version=SHIPPED, protocol=4)
    factories.AgentFactory(version="3.2.0", protocol=3)
    factories.AgentFactory(version="3.2.0", protocol=3)
    factories.AgentFactory(version="1.0.0", protocol=1, revoked_at=timezone.now())  # not counted
    factories.AgentFactory(version="", protocol=1, last_seen_at=None)  # enrolment issued, never polled

    def families():
        return {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
                for f in PortalCollector().agents_by_version()}  # fmt: skip

    found = families()
    by_version = found["backup_portal_agents_by_version"]
    assert by_version == {("current",): 1, ("outdated",): 2, ("unsupported",): 0, ("unknown",): 1}
    assert found["backup_portal_agent_shipped_version_info"] == {(SHIPPED,): 1}
    monkeypatch.setattr(Agent, "OLDEST_PROTOCOL", 4)
    assert families()["backup_portal_agents_by_version"] == {
        ("current",): 1, ("outdated",): 0, ("unsupported",): 2, ("unknown",): 1
    }  # fmt: skip
