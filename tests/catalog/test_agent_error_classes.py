"""Structured agent errors (protocol 2): the agent's `error_class` is trusted, the text is the fallback.

docs/agent-protocol.md, "Error classes": a known code is used as sent; an
unknown or absent one leaves the decision to ``catalog.failures.classify``,
and no `error_class` is ever a reason to refuse the report (the agent would
resend it forever).
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from backup_agent import error_classes as agent_error_classes
from catalog.choices import AlertKind, AlertSeverity, ErrorClass, JobState
from catalog.failures import AGENT_ERROR_CLASSES
from catalog.models import Agent, Alert, Job
from catalog.services import agents, alerts, jobs
from tests import factories
from tests.helpers import agent_client

PERMISSION_TEXT = "tar: /srv/data: Cannot open: Permission denied"


@pytest.fixture
def running_job(db):
    job = factories.JobFactory()
    job.client.policy.max_retries = 3
    job.client.policy.save()
    api, _ = agent_client(job.agent)
    jobs.claim(job.agent)
    return job, api


def fail(api, job: Job, **fields):
    report = {"status": "failed", "error": PERMISSION_TEXT, "log_tail": "", **fields}
    return api.post(f"/api/agent/v1/jobs/{job.pk}/complete", report, format="json")


def test_every_code_the_agent_sends_is_one_the_portal_knows():
    assert set(agent_error_classes.ALL) <= set(ErrorClass.values)
    assert set(agent_error_classes.ALL) <= AGENT_ERROR_CLASSES
    # The portal's own decision, never the agent's.
    assert ErrorClass.LEASE_EXPIRED not in agent_error_classes.ALL
    assert ErrorClass.LEASE_EXPIRED not in AGENT_ERROR_CLASSES


@pytest.mark.parametrize("code", agent_error_classes.ALL)
def test_each_code_the_agent_sends_is_recorded_as_sent(running_job, code):
    job, api = running_job

    response = fail(api, job, error_class=code, protocol=2)

    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, code)


def test_a_known_code_is_trusted_even_when_the_text_says_otherwise(running_job):
    job, api = running_job

    response = fail(api, job, error_class=ErrorClass.DISK_FULL, protocol=2)  # the text says permission

    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert job.error_class == ErrorClass.DISK_FULL
    assert Job.objects.get(retry_of=job).attempt == 2  # retried as any failure


@pytest.mark.parametrize(
    "code",
    ["quantum_flux", "", None, 42, ["disk_full"], {"code": "disk_full"}, "DISK_FULL", "lease_expired"],
)
def test_an_unknown_code_is_acknowledged_and_the_text_decides(running_job, code):
    job, api = running_job

    response = fail(api, job, error_class=code, protocol=2)

    assert response.status_code == 200, response.content
    assert response.json()["acknowledged"] is True
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.PERMISSION_DENIED)


def test_without_a_code_the_text_decides_as_for_protocol_1(running_job):
    job, api = running_job

    response = fail(api, job)  # no protocol, no error_class: a protocol 1 agent or its spooled report

    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert job.error_class == ErrorClass.PERMISSION_DENIED


def test_the_same_report_again_changes_nothing(running_job):
    job, api = running_job
    assert fail(api, job, error_class=ErrorClass.TIMEOUT).status_code == 200

    assert fail(api, job, error_class=ErrorClass.DISK_FULL).status_code == 200

    job.refresh_from_db()
    assert job.error_class == ErrorClass.TIMEOUT
    assert Job.objects.filter(retry_of=job).count() == 1


def test_a_cancelled_job_has_no_class_whatever_the_agent_says(running_job):
    job, api = running_job
    jobs.cancel(job.pk)

    assert fail(api, job, error="cancelled", error_class=ErrorClass.UNKNOWN).status_code == 200

    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.CANCELLED, "")


def test_an_invalid_job_is_not_retried_and_one_alert_says_so(running_job):
    job, api = running_job
    error = "invalid plugin options: 'database' is required"

    response = fail(api, job, error=error, error_class=ErrorClass.INVALID_JOB, protocol=2)

    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.INVALID_JOB)
    assert ErrorClass.INVALID_JOB in jobs.NOT_RETRIED
    assert not Job.objects.filter(retry_of=job).exists()
    alert = Alert.objects.get(kind=AlertKind.JOB_FAILED)
    assert (alert.severity, alert.job_id, alert.client_id, alert.agent_id) == (
        AlertSeverity.CRITICAL,
        job.pk,
        job.client_id,
        job.agent_id,
    )
    assert "invalid job" in alert.message and "not retried" in alert.message and error in alert.message
    assert "allow-list" not in alert.message  # that is the refused job's message


def test_an_invalid_job_has_a_label():
    assert ErrorClass.INVALID_JOB.label == "Invalid job (options, target or storage)"


# --- the protocol version the agent speaks ---------------------------------------------------------


def test_poll_records_the_protocol_the_agent_speaks(db):
    agent = factories.JobFactory().agent
    api, _ = agent_client(agent)
    body = {"version": "0.2.0", "protocol": 2, "plugins": ["files"]}

    assert api.post("/api/agent/v1/poll", body, format="json").status_code == 200
    agent.refresh_from_db()
    assert agent.protocol == 2

    del body["protocol"]  # an older agent again
    assert api.post("/api/agent/v1/poll", body, format="json").status_code == 200
    agent.refresh_from_db()
    assert agent.protocol == 1


def test_enrol_records_the_protocol(db, app):
    _, token = agents.issue_enrolment_token(application=app, hostname="db01.example.com")
    body = {"token": token, "hostname": "db01.example.com", "version": "0.2.0", "protocol": 2, "plugins": []}

    assert APIClient().post("/api/agent/v1/enrol", body, format="json").status_code == 201
    assert Agent.objects.get(hostname="db01.example.com").protocol == 2


# --- the client alert helper ---------------------------------------------------------------------


def test_a_client_alert_names_the_application_client_agent_and_job(db):
    job = factories.JobFactory()

    alert = alerts.raise_client_alert(AlertKind.JOB_FAILED, AlertSeverity.CRITICAL, job.client, "m", job=job)

    assert alert.key == alerts.client_key(AlertKind.JOB_FAILED, job.client_id)
    assert (alert.application_id, alert.client_id, alert.agent_id, alert.job_id) == (
        job.client.application_id,
        job.client_id,
        job.agent_id,
        job.pk,
    )
    # One open alert per key.
    assert alerts.raise_client_alert(AlertKind.JOB_FAILED, AlertSeverity.CRITICAL, job.client, "m") is None


def test_a_client_alert_without_a_job_names_the_clients_agent_or_none(db):
    client = factories.BackupClientFactory()

    linked = alerts.raise_client_alert(AlertKind.RPO_BREACHED, AlertSeverity.CRITICAL, client, "m")
    unlinked = alerts.raise_client_alert(
        AlertKind.RESTORE_TEST_OVERDUE, AlertSeverity.WARNING, client, "m", link_agent=False
    )

    assert (linked.agent_id, linked.job_id) == (client.agent_id, None)
    assert (unlinked.agent_id, unlinked.client_id, unlinked.key) == (
        None,
        client.pk,
        alerts.client_key(AlertKind.RESTORE_TEST_OVERDUE, client.pk),
    )
