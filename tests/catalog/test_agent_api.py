"""The agent API: authentication, own-jobs-only, bad payloads, idempotent completion."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.choices import AlertKind, ClientStatus, JobKind, JobState, Plugin
from catalog.models import Agent, Alert, Backup, BackupClient, Job
from catalog.services import agents, jobs
from tests import factories
from tests.helpers import agent_client

SHA = hashlib.sha256(b"data").hexdigest()


@pytest.fixture
def backup_job(db):
    return factories.JobFactory(kind=JobKind.BACKUP)


def poll(api: APIClient):
    return api.post("/api/agent/v1/poll", {"version": "0.1.0", "plugins": ["files"]}, format="json")


def success_report(job: Job | None = None, **overrides) -> dict:
    """A successful backup's report; at ``job``'s assigned destination when given."""
    report = {
        "status": "succeeded",
        "size": 4,
        "stored_size": 4,
        "location": jobs.backup_destination(job) if job is not None else "app/client/job-1",
        "sha256": SHA,
        "compression": "none",
        "log_tail": "",
    }
    report.update(overrides)
    return report


# --- enrolment -------------------------------------------------------------------


def test_enrol_exchanges_one_time_token_and_activates_waiting_client(db, app):
    policy = factories.ProtectionPolicyFactory()
    waiting = BackupClient.objects.create(
        application=app,
        name="db01-orders",
        hostname="db01.example.com",
        plugin=Plugin.POSTGRESQL,
        options={"database": "orders"},
        policy=policy,
        status=ClientStatus.PENDING_ENROLMENT,
    )
    _, token = agents.issue_enrolment_token(application=app, hostname="db01.example.com")
    body = {"token": token, "hostname": "db01.example.com", "version": "0.1.0", "plugins": ["postgresql"]}

    response = APIClient().post("/api/agent/v1/enrol", body, format="json")

    assert response.status_code == 201, response.content
    agent = Agent.objects.get(hostname="db01.example.com")
    assert agent.token_hash == hashlib.sha256(response.json()["agent_token"].encode()).hexdigest()
    assert response.json()["agent_token"] not in str(Agent.objects.values_list())  # only the hash is kept
    assert agent.applications.filter(pk=app.pk).exists()
    waiting.refresh_from_db()
    assert (waiting.status, waiting.agent_id) == (ClientStatus.ACTIVE, agent.pk)
    assert waiting.next_backup_at is not None

    again = APIClient().post("/api/agent/v1/enrol", body, format="json")
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


def test_enrol_refuses_token_issued_for_another_host(db, app):
    _, token = agents.issue_enrolment_token(application=app, hostname="db01.example.com")
    response = APIClient().post(
        "/api/agent/v1/enrol", {"token": token, "hostname": "evil.example.com"}, format="json"
    )
    assert response.status_code == 400
    assert "db01.example.com" in response.json()["detail"]
    assert not Agent.objects.exists()


def test_enrol_rejects_malformed_payload_with_field_errors(db):
    response = APIClient().post(
        "/api/agent/v1/enrol", {"hostname": "bad host!", "plugins": ["ftp"]}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) >= {"token", "hostname", "plugins"}


# --- authentication ---------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer", "Token abc", "Bearer a b"])
def test_poll_requires_a_valid_agent_token(db, header):
    api = APIClient()
    if header:
        api.credentials(HTTP_AUTHORIZATION=header)
    response = poll(api)
    assert response.status_code in (401, 403)
    assert "code" in response.json()


def test_revoked_agent_token_is_refused(backup_job):
    api, _ = agent_client(backup_job.agent)
    Agent.objects.filter(pk=backup_job.agent_id).update(revoked_at=timezone.now())
    assert poll(api).status_code == 401


def test_session_login_is_not_an_agent(backup_job, superuser):
    browser = Client()
    browser.force_login(superuser)
    response = browser.post("/api/agent/v1/poll", {}, content_type="application/json")
    assert response.status_code in (401, 403)


# --- poll and claim -----------------------------------------------------------------


def test_poll_claims_queued_jobs_once_with_a_lease(backup_job):
    api, _ = agent_client(backup_job.agent)

    first = poll(api)

    assert first.status_code == 200
    payload = first.json()
    assert [job["id"] for job in payload["jobs"]] == [backup_job.pk]
    job = payload["jobs"][0]
    client = backup_job.client
    assert job["client"] == {
        "id": client.pk,
        "name": client.name,
        "application": client.application.slug,
        "plugin": client.plugin,
        "options": client.options,
    }
    assert job["destination"] == f"{client.application.slug}/{client.name}/job-{backup_job.pk}"
    assert job["storage"]["root"] == client.policy.storage_target.location
    assert payload["poll_after"] > 0
    backup_job.refresh_from_db()
    assert backup_job.state == JobState.RUNNING
    assert backup_job.lease_expires_at > timezone.now()
    assert poll(api).json()["jobs"] == []  # handed out exactly once


def test_poll_updates_heartbeat_and_closes_silent_alert(backup_job):
    agent = backup_job.agent
    api, _ = agent_client(agent)  # saves the agent: before its silence is set
    Agent.objects.filter(pk=agent.pk).update(last_seen_at=timezone.now() - timezone.timedelta(hours=1))
    factories.AlertFactory(kind=AlertKind.AGENT_SILENT, key=f"agent_silent:agent:{agent.pk}", agent=agent)

    poll(api)

    agent.refresh_from_db()
    assert timezone.now() - agent.last_seen_at < timezone.timedelta(seconds=5)
    assert Alert.objects.get(agent=agent).resolved_at is not None


def test_poll_does_not_hand_out_jobs_before_their_retry_time(backup_job):
    Job.objects.filter(pk=backup_job.pk).update(not_before=timezone.now() + timezone.timedelta(minutes=5))
    api, _ = agent_client(backup_job.agent)
    assert poll(api).json()["jobs"] == []


def test_poll_query_count_is_constant_in_the_number_of_jobs(backup_job, django_assert_max_num_queries):
    # One open backup per client: ten jobs are ten of this agent's clients.
    for _ in range(9):
        factories.JobFactory(client=factories.BackupClientFactory(agent=backup_job.agent))
    api, _ = agent_client(backup_job.agent)
    with django_assert_max_num_queries(12):
        response = poll(api)
    assert len(response.json()["jobs"]) == 10


# --- another agent's jobs -------------------------------------------------------------------


def test_agent_cannot_touch_another_agents_job(backup_job):
    intruder = factories.AgentFactory()
    api, _ = agent_client(intruder)
    jobs.claim(backup_job.agent)

    progress = api.post(f"/api/agent/v1/jobs/{backup_job.pk}/progress", {"bytes_done": 1}, format="json")
    complete = api.post(
        f"/api/agent/v1/jobs/{backup_job.pk}/complete", success_report(backup_job), format="json"
    )

    assert progress.status_code == 404
    assert complete.status_code == 404
    assert progress.json()["code"] == "not_found"
    backup_job.refresh_from_db()
    assert backup_job.state == JobState.RUNNING
    assert not Backup.objects.exists()


def test_unknown_job_is_404(backup_job):
    api, _ = agent_client(backup_job.agent)
    assert api.post("/api/agent/v1/jobs/999999/complete", success_report(), format="json").status_code == 404


# --- progress and complete -------------------------------------------------------------------


def test_progress_records_bytes_and_extends_the_lease(backup_job):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    Job.objects.filter(pk=backup_job.pk).update(
        lease_expires_at=timezone.now() + timezone.timedelta(seconds=5)
    )

    response = api.post(
        f"/api/agent/v1/jobs/{backup_job.pk}/progress",
        {"bytes_done": 500, "bytes_total": 1000},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["cancel"] is False
    # The next report in a quarter of the lease (PORTAL_JOB_LEASE_SECONDS = 120 by default): 30 s.
    assert response.json()["report_after"] == settings.PORTAL_JOB_LEASE_SECONDS // 4 == 30
    backup_job.refresh_from_db()
    assert (backup_job.bytes_done, backup_job.bytes_total) == (500, 1000)
    assert backup_job.lease_expires_at > timezone.now() + timezone.timedelta(seconds=60)


def test_progress_tells_the_agent_to_stop_a_cancelled_job(backup_job):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    jobs.cancel(backup_job.pk)
    response = api.post(f"/api/agent/v1/jobs/{backup_job.pk}/progress", {"bytes_done": 1}, format="json")
    assert response.json()["cancel"] is True


def test_complete_records_one_backup_and_a_repeat_creates_nothing(backup_job):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    url = f"/api/agent/v1/jobs/{backup_job.pk}/complete"

    first = api.post(url, success_report(backup_job), format="json")
    second = api.post(url, success_report(backup_job), format="json")

    assert first.status_code == second.status_code == 200
    assert first.json()["backup"] == second.json()["backup"]
    backup = Backup.objects.get()
    assert (backup.job_id, backup.sha256, backup.size_bytes) == (backup_job.pk, SHA, 4)
    assert backup.expires_at - backup.taken_at == timezone.timedelta(
        days=backup_job.client.policy.retention_days
    )
    backup_job.refresh_from_db()
    assert backup_job.state == JobState.SUCCEEDED


@pytest.mark.parametrize(
    "report, field",
    [
        (success_report(sha256="XYZ"), "sha256"),
        (success_report(size=-1), "size"),
        (success_report(location="../../etc"), "location"),
        (success_report(location="/abs/path"), "location"),
        ({k: v for k, v in success_report().items() if k != "sha256"}, "sha256"),
        ({"status": "failed", "error": ""}, "error"),
        ({"status": "maybe"}, "status"),
    ],
)
def test_complete_rejects_bad_reports_and_changes_nothing(backup_job, report, field):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)

    response = api.post(f"/api/agent/v1/jobs/{backup_job.pk}/complete", report, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    backup_job.refresh_from_db()
    assert backup_job.state == JobState.RUNNING
    assert not Backup.objects.exists()


# --- numbers the catalog cannot hold, locations it did not assign ---------------------------------

MAX_BYTES = 2**63 - 1  # BigIntegerField


@pytest.mark.parametrize(
    "raw_size",
    [
        "100000000000000000000000",  # 10**23 as a JSON integer: once an OverflowError, a 500
        str(MAX_BYTES + 1),
        "1e23",  # a float
        "5.0",  # a float, even a whole one: sizes are counted
        "-1",
        "true",
        '"many"',
    ],
)
def test_complete_refuses_sizes_the_catalog_cannot_hold(backup_job, raw_size):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    report = success_report(backup_job, size="SIZE", stored_size="SIZE")
    raw = json.dumps(report).replace('"SIZE"', raw_size)

    response = api.generic("POST", f"/api/agent/v1/jobs/{backup_job.pk}/complete", raw, "application/json")

    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {"size", "stored_size"}
    backup_job.refresh_from_db()
    assert backup_job.state == JobState.RUNNING
    assert not Backup.objects.exists()


def test_the_largest_size_the_catalog_holds_is_accepted(backup_job):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    report = success_report(backup_job, size=MAX_BYTES, stored_size=MAX_BYTES)

    response = api.post(f"/api/agent/v1/jobs/{backup_job.pk}/complete", report, format="json")

    assert response.status_code == 200, response.content
    assert Backup.objects.get().size_bytes == MAX_BYTES


@pytest.mark.parametrize(
    "raw",
    [
        '{"bytes_done": 100000000000000000000000}',
        '{"bytes_done": 1e23}',
        '{"bytes_done": 1, "bytes_total": 9223372036854775808}',
        '{"bytes_done": 1, "bytes_total": 2.5}',
        '{"bytes_done": -1}',
    ],
)
def test_progress_refuses_byte_counts_the_catalog_cannot_hold(backup_job, raw):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)

    response = api.generic("POST", f"/api/agent/v1/jobs/{backup_job.pk}/progress", raw, "application/json")

    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) <= {"bytes_done", "bytes_total"}
    backup_job.refresh_from_db()
    assert (backup_job.bytes_done, backup_job.bytes_total) == (0, None)


def test_progress_up_to_the_largest_byte_count_is_recorded(backup_job):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    body = {"bytes_done": MAX_BYTES, "bytes_total": MAX_BYTES}

    response = api.post(f"/api/agent/v1/jobs/{backup_job.pk}/progress", body, format="json")

    assert response.status_code == 200, response.content
    backup_job.refresh_from_db()
    assert (backup_job.bytes_done, backup_job.bytes_total) == (MAX_BYTES, MAX_BYTES)


@pytest.mark.parametrize("manifest", ['{"tables": {"orders": 1e400}}', '{"note": "a\\u0000b"}'])
def test_complete_refuses_a_manifest_the_database_cannot_store(backup_job, manifest):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    raw = json.dumps(success_report(backup_job, manifest="MANIFEST")).replace('"MANIFEST"', manifest)

    response = api.generic("POST", f"/api/agent/v1/jobs/{backup_job.pk}/complete", raw, "application/json")

    assert response.status_code == 400, response.content
    assert "manifest" in response.json()["errors"]
    assert not Backup.objects.exists()


def test_the_destination_handed_out_is_the_location_accepted(backup_job):
    api, _ = agent_client(backup_job.agent)
    [job] = poll(api).json()["jobs"]

    response = api.post(
        f"/api/agent/v1/jobs/{backup_job.pk}/complete",
        success_report(location=job["destination"]),
        format="json",
    )

    assert response.status_code == 200, response.content
    assert Backup.objects.get().location == job["destination"] == jobs.backup_destination(backup_job)


def test_complete_at_another_location_than_assigned_is_refused_and_records_nothing(backup_job):
    other = factories.JobFactory()  # another application's client
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    assigned = jobs.backup_destination(backup_job)
    url = f"/api/agent/v1/jobs/{backup_job.pk}/complete"

    for location in (
        jobs.backup_destination(other),  # another tenant's folder
        assigned.rsplit("/", 1)[0] + f"/job-{backup_job.pk + 1}",  # another job's folder
        assigned + "/sub",
        assigned + "/",
        assigned.upper(),
        "elsewhere/entirely",
    ):
        response = api.post(url, success_report(location=location), format="json")

        assert response.status_code == 400, location
        [message] = response.json()["errors"]["location"]
        assert assigned in message and "destination" in message
    backup_job.refresh_from_db()
    assert backup_job.state == JobState.RUNNING
    assert not Backup.objects.exists()
    assert api.post(url, success_report(backup_job), format="json").status_code == 200


def test_complete_of_a_job_whose_lease_moved_on_is_409(backup_job):
    api, _ = agent_client(backup_job.agent)
    response = api.post(
        f"/api/agent/v1/jobs/{backup_job.pk}/complete", success_report(backup_job), format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "lease_lost"


def test_failed_report_is_classified_and_retried(backup_job):
    api, _ = agent_client(backup_job.agent)
    jobs.claim(backup_job.agent)
    response = api.post(
        f"/api/agent/v1/jobs/{backup_job.pk}/complete",
        {"status": "failed", "error": "tar: /srv/data: Cannot open: Permission denied", "log_tail": "..."},
        format="json",
    )
    assert response.status_code == 200
    backup_job.refresh_from_db()
    assert (backup_job.state, backup_job.error_class) == (JobState.FAILED, "permission_denied")
    retry = Job.objects.get(retry_of=backup_job)
    assert (retry.attempt, retry.state, retry.trigger) == (2, JobState.QUEUED, "retry")


def test_tokens_say_what_they_are_and_never_look_like_an_option(db, app):
    # A token starting with "-" broke `backup-agent enrol --token …` (argparse read it as an option).
    for _ in range(50):
        _, enrolment = agents.issue_enrolment_token(application=app, hostname="db01.example.com")
        agent_token = factories.AgentFactory().issue_token()
        assert enrolment.startswith("bpe_") and agent_token.startswith("bpa_")
