"""The agent's allow-list on the portal side: reported on poll, shown, and used to flag clients early.

The agent enforces the allow-list (tests/agent, tests/e2e/test_allow_list.py);
the portal only records what the agent reports and tells people what will be
refused, with the command the server's administrator would run.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog import allow_list
from catalog.choices import ErrorClass, Plugin
from catalog.failures import classify
from catalog.models import Agent
from tests import factories
from tests.helpers import agent_client

ALLOWED = {
    "paths": ["/srv/app"],
    "restore_roots": ["/srv/restore"],
    "commands": ["/usr/local/bin/export-app"],
    "databases": ["postgresql:orders_*", "postgresql:orders_us@db01.example.com:5433"],
    "storage": ["/mnt/backup"],
}


@pytest.mark.django_db
def test_poll_records_the_reported_allow_list_and_an_older_agent_changes_nothing():
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)

    api.post("/api/agent/v1/poll", {"version": "2", "allow": {**ALLOWED, "junk": [1]}}, format="json")
    assert Agent.objects.get(pk=agent.pk).allow_list == ALLOWED

    api.post("/api/agent/v1/poll", {"version": "1"}, format="json")  # an agent without allow-lists
    assert Agent.objects.get(pk=agent.pk).allow_list == ALLOWED


@pytest.mark.django_db
def test_poll_refuses_an_allow_list_that_is_not_an_object():
    api, _ = agent_client(factories.AgentFactory())
    response = api.post("/api/agent/v1/poll", {"allow": ["/"]}, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "plugin, options, root, expected",
    [
        (Plugin.FILES, {"paths": ["/srv/app/data"]}, "/mnt/backup", []),
        (Plugin.FILES, {"paths": ["/srv/app"]}, "/mnt/backup/tier1", []),
        (Plugin.FILES, {"paths": ["/srv/app2"]}, "/mnt/backup", ["path /srv/app2"]),
        (Plugin.FILES, {"paths": ["/etc/shadow"]}, "/mnt/backup", ["path /etc/shadow"]),
        (Plugin.FILES, {"paths": ["/srv/app"]}, "/etc", ["storage /etc"]),
        (Plugin.POSTGRESQL, {"database": "orders_eu"}, "/mnt/backup", []),
        (Plugin.POSTGRESQL, {"database": "payroll"}, "/mnt/backup", ["database postgresql:payroll"]),
        (Plugin.MYSQL, {"database": "orders_eu"}, "/mnt/backup", ["database mysql:orders_eu"]),
        (
            Plugin.POSTGRESQL,
            {"database": "orders_eu", "host": "evil.example.com"},
            "/mnt/backup",
            ["database postgresql:orders_eu@evil.example.com"],
        ),
        (
            Plugin.POSTGRESQL,
            {"database": "orders_us", "host": "DB01.example.com", "port": 5433},
            "/mnt/backup",
            [],
        ),
        (
            Plugin.COMMAND,
            {"backup_argv": ["/usr/local/bin/export-app"], "restore_argv": ["/bin/sh", "-c", "x"]},
            "/mnt/backup",
            ["program /bin/sh"],
        ),
    ],
)
def test_violations_name_what_the_agent_will_refuse(plugin, options, root, expected):
    found = allow_list.violations(plugin, options, root, ALLOWED)
    assert [line.split(" is not allowed")[0] for line in found] == expected
    assert all("backup-agent allow --" in line for line in found)


def test_nothing_is_flagged_before_the_agent_reported_its_allow_list():
    assert allow_list.violations(Plugin.FILES, {"paths": ["/etc"]}, "/etc", None) == []


def test_a_refusal_is_its_own_error_class():
    message = (
        "refused by agent: /etc is not in this server's allow-list for backups; to allow it, run on the "
        "server as root: backup-agent allow --path /etc (permission denied would not apply)"
    )
    assert classify(message) == ErrorClass.REFUSED_BY_AGENT
    assert classify("tar: /etc/shadow: Permission denied") == ErrorClass.PERMISSION_DENIED


@pytest.mark.django_db
def test_the_client_page_shows_the_allow_list_and_flags_what_will_be_refused(owner_client, app):
    agent = factories.AgentFactory(applications=[app], allow_list=ALLOWED)
    target = factories.StorageTargetFactory(location="/mnt/backup")
    policy = factories.ProtectionPolicyFactory(storage_target=target)
    client = factories.BackupClientFactory(
        application=app, agent=agent, plugin=Plugin.FILES, options={"paths": ["/srv/other"]}, policy=policy
    )

    page = owner_client.get(reverse("catalog:client", args=[client.pk])).content.decode()

    assert "Server's allow-list" in page and "<code>/srv/app</code>" in page
    assert "will refuse this client" in page
    assert "backup-agent allow --path /srv/other" in page


@pytest.mark.django_db
def test_a_client_inside_the_allow_list_is_not_flagged(owner_client, app):
    agent = factories.AgentFactory(applications=[app], allow_list=ALLOWED)
    target = factories.StorageTargetFactory(location="/mnt/backup")
    policy = factories.ProtectionPolicyFactory(storage_target=target)
    client = factories.BackupClientFactory(
        application=app, agent=agent, plugin=Plugin.FILES, options={"paths": ["/srv/app"]}, policy=policy
    )

    page = owner_client.get(reverse("catalog:client", args=[client.pk])).content.decode()

    assert "will refuse this client" not in page


@pytest.mark.django_db
def test_a_refused_backup_is_not_retried_and_one_alert_says_who_must_act():
    from catalog.choices import AlertKind, JobState
    from catalog.models import Alert, Job
    from catalog.services import jobs

    job = factories.JobFactory()
    job.client.policy.max_retries = 3
    job.client.policy.save()
    api, _ = agent_client(job.agent)
    jobs.claim(job.agent)
    error = (
        "refused by agent: /srv/x is not in this server's allow-list for backups; to allow it, "
        "run on the server as root: backup-agent allow --path /srv/x"
    )

    report = {"status": "failed", "error": error}
    response = api.post(f"/api/agent/v1/jobs/{job.pk}/complete", report, format="json")

    assert response.status_code == 200
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.REFUSED_BY_AGENT)
    assert not Job.objects.filter(retry_of=job).exists()
    alert = Alert.objects.get(kind=AlertKind.JOB_FAILED)
    assert "backup-agent allow --path /srv/x" in alert.message and "not retried" in alert.message
