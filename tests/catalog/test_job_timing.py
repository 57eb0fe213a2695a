"""Issue #12: a finished backup is never thrown away by timing; lost jobs are re-queued at once;
times are the portal's own. Through the agent API where the agent is concerned."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import AlertKind, ErrorClass, JobKind, JobState, JobTrigger
from catalog.models import Alert, Backup, Job
from catalog.services import alerts, jobs
from tests import factories
from tests.helpers import agent_client

SHA = hashlib.sha256(b"data").hexdigest()
MANIFEST = {"job": 1, "files": 3}


def late_report(job: Job, **overrides) -> dict:
    report = {
        "status": "succeeded",
        "size": 4,
        "stored_size": 4,
        "location": jobs.backup_destination(job),
        "sha256": SHA,
        "compression": "none",
        "log_tail": "done",
        "manifest": MANIFEST,
    }
    report.update(overrides)
    return report


def complete(api, job: Job, body: dict):
    return api.post(f"/api/agent/v1/jobs/{job.pk}/complete", body, format="json")


def poll(api, running=(), **extra):
    body = {"version": "0.2.0", "plugins": ["files"], "running": list(running), **extra}
    return api.post("/api/agent/v1/poll", body, format="json")


@pytest.fixture
def reaped(db):
    """A backup claimed, whose lease ran out: failed lease_expired, its retry queued."""
    job = factories.JobFactory(kind=JobKind.BACKUP)
    jobs.claim(job.agent)
    job.refresh_from_db()
    assert jobs.reap_expired_leases(now=job.lease_expires_at + timedelta(seconds=1)) == 1
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)
    return job


# --- 1. late completion ------------------------------------------------------------------


def test_late_success_after_the_reaper_is_accepted_and_the_queued_retry_cancelled(reaped):
    retry = Job.objects.get(retry_of=reaped)
    assert retry.state == JobState.QUEUED
    api, _ = agent_client(reaped.agent)

    response = complete(api, reaped, late_report(reaped))

    assert response.status_code == 200, response.content
    reaped.refresh_from_db()
    retry.refresh_from_db()
    backup = Backup.objects.get()
    assert response.json()["backup"] == backup.pk
    assert (backup.job_id, backup.location, backup.sha256, backup.manifest) == (
        reaped.pk,
        jobs.backup_destination(reaped),
        SHA,
        MANIFEST,
    )
    assert reaped.state == JobState.SUCCEEDED
    assert (reaped.error_class, reaped.error_message) == ("", "")
    assert "after the lease expired" in reaped.log_tail
    assert f"job {retry.pk}" in reaped.log_tail
    assert retry.state == JobState.CANCELLED
    assert jobs.open_backup_of(reaped.client_id) is None

    again = complete(api, reaped, late_report(reaped))  # the agent resends its spool: idempotent
    assert again.status_code == 200
    assert again.json()["backup"] == backup.pk
    assert Backup.objects.count() == 1


def test_late_success_resolves_the_failure_alert(db):
    job = factories.JobFactory(kind=JobKind.BACKUP)
    job.client.policy.max_retries = 0
    job.client.policy.save()
    jobs.claim(job.agent)
    job.refresh_from_db()
    jobs.reap_expired_leases(now=job.lease_expires_at + timedelta(seconds=1))
    key = alerts.client_key(AlertKind.JOB_FAILED, job.client_id)
    assert Alert.objects.filter(key=key, resolved_at__isnull=True).exists()
    assert not Job.objects.filter(retry_of=job).exists()
    api, _ = agent_client(job.agent)

    assert complete(api, job, late_report(job)).status_code == 200

    assert not Alert.objects.filter(key=key, resolved_at__isnull=True).exists()
    assert Backup.objects.filter(job=job).exists()


@pytest.mark.parametrize("retry_state", [JobState.RUNNING, JobState.SUCCEEDED])
def test_late_success_when_the_retry_has_started_is_lease_lost(reaped, retry_state):
    retry = Job.objects.get(retry_of=reaped)
    Job.objects.filter(pk=retry.pk).update(not_before=timezone.now())
    jobs.claim(reaped.agent)
    if retry_state == JobState.SUCCEEDED:
        jobs.complete_success(
            reaped.agent, retry.pk, report=jobs.BackupReport(4, 4, jobs.backup_destination(retry), SHA)
        )
    api, _ = agent_client(reaped.agent)

    response = complete(api, reaped, late_report(reaped))

    assert response.status_code == 409
    assert response.json()["code"] == "lease_lost"
    reaped.refresh_from_db()
    assert reaped.state == JobState.FAILED
    assert not Backup.objects.filter(job=reaped).exists()


def test_late_success_without_manifest_or_for_a_real_failure_is_lease_lost(reaped):
    api, _ = agent_client(reaped.agent)
    assert complete(api, reaped, late_report(reaped, manifest={})).status_code == 409
    other = factories.JobFactory(kind=JobKind.BACKUP)
    jobs.claim(other.agent)
    jobs.complete_failure(other.agent, other.pk, error="disk full", error_class=ErrorClass.DISK_FULL)
    api, _ = agent_client(other.agent)
    assert complete(api, other, late_report(other)).status_code == 409
    assert Backup.objects.count() == 0


# --- 2. jobs the agent does not report running ---------------------------------------------


def test_the_jobs_of_a_lost_answer_are_failed_and_retried_at_the_next_poll(db, settings):
    """The lost response: jobs handed out in poll 1's answer never reached the agent."""
    settings.PORTAL_RETRY_BASE_SECONDS = 0
    job = factories.JobFactory(kind=JobKind.BACKUP)
    api, _ = agent_client(job.agent)

    first = poll(api)  # this answer is lost on the way
    assert [j["id"] for j in first.json()["jobs"]] == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.RUNNING

    second = poll(api, running=[])

    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)
    assert "did not receive or is not running" in job.error_message
    retry = Job.objects.get(retry_of=job)
    assert (retry.trigger, retry.attempt) == (JobTrigger.RETRY, 2)
    assert [j["id"] for j in second.json()["jobs"]] == [retry.pk]  # handed out again at once
    retry.refresh_from_db()
    assert retry.state == JobState.RUNNING

    poll(api, running=[retry.pk])  # the retry's own answer arrived: left alone
    retry.refresh_from_db()
    assert retry.state == JobState.RUNNING


def test_a_job_handed_out_in_this_very_answer_is_not_judged_by_it(db):
    job = factories.JobFactory(kind=JobKind.BACKUP)
    api, _ = agent_client(job.agent)
    assert [j["id"] for j in poll(api, running=[]).json()["jobs"]] == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_a_job_listed_as_running_is_left_alone(db):
    job = factories.JobFactory(kind=JobKind.BACKUP)
    api, _ = agent_client(job.agent)
    poll(api)
    for _ in range(3):
        poll(api, running=[job.pk])
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_an_idle_poll_reads_once_and_writes_nothing_for_running_jobs(db, django_assert_max_num_queries):
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)
    poll(api)
    # As before (agent, heartbeat, claim in a savepoint) plus one read of the jobs it should be running.
    with django_assert_max_num_queries(7) as captured:
        assert poll(api).status_code == 200
    assert not any('UPDATE "catalog_job"' in q["sql"] for q in captured.captured_queries)


@pytest.mark.parametrize("kind", [JobKind.RESTORE, JobKind.RESTORE_TEST])
def test_a_restore_that_never_reached_the_agent_is_queued_again_not_failed(db, kind):
    backup = factories.BackupFactory()
    job = factories.JobFactory(kind=kind, client=backup.client, backup=backup, target_location="/r")
    api, _ = agent_client(job.agent)
    poll(api)  # lost
    poll(api)  # judged: queued again and handed out anew in this very answer
    job.refresh_from_db()
    assert job.state == JobState.RUNNING
    assert job.attempt == 2
    assert "did not receive or is not running" in job.log_tail
    assert Backup.objects.get(pk=backup.pk).verification == ""


def test_a_restore_that_reported_progress_and_vanished_fails(db):
    backup = factories.BackupFactory()
    job = factories.JobFactory(
        kind=JobKind.RESTORE, client=backup.client, backup=backup, target_location="/r"
    )
    api, _ = agent_client(job.agent)
    poll(api)
    api.post(f"/api/agent/v1/jobs/{job.pk}/progress", {"bytes_done": 10}, format="json")
    poll(api, running=[job.pk])
    poll(api, running=[])  # the agent restarted: it no longer has the job
    job.refresh_from_db()
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)


def test_the_reaper_requeues_a_restore_that_never_started_up_to_the_limit(db):
    backup = factories.BackupFactory()
    job = factories.JobFactory(
        kind=JobKind.RESTORE, client=backup.client, backup=backup, target_location="/r"
    )
    now = timezone.now()
    for attempt in range(1, jobs.REQUEUE_LIMIT + 1):
        assert [j.pk for j in jobs.claim(job.agent, now=now)] == [job.pk]
        job.refresh_from_db()
        assert job.attempt == attempt
        now = job.lease_expires_at + timedelta(seconds=1)
        jobs.reap_expired_leases(now=now)
        job.refresh_from_db()
        if attempt < jobs.REQUEUE_LIMIT:
            assert (job.state, job.attempt, job.started_at) == (JobState.QUEUED, attempt + 1, None)
    assert (job.state, job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)


# --- 5. clocks ---------------------------------------------------------------------------------


def test_an_agent_three_hours_behind_gives_a_non_negative_duration(db):
    job = factories.JobFactory(kind=JobKind.BACKUP)
    api, _ = agent_client(job.agent)
    poll(api)
    job.refresh_from_db()
    claimed_at = job.started_at
    agent_now = timezone.now() - timedelta(hours=3)
    body = late_report(
        job,
        started_at=(agent_now - timedelta(minutes=5)).isoformat(),
        finished_at=agent_now.isoformat(),
    )

    assert complete(api, job, body).status_code == 200

    job.refresh_from_db()
    backup = Backup.objects.get(job=job)
    assert job.started_at == claimed_at
    assert job.finished_at >= job.started_at
    assert job.duration >= timedelta(0)
    assert abs(job.reported_finished_at - agent_now) < timedelta(seconds=1)
    assert job.reported_finished_at - job.reported_started_at == timedelta(minutes=5)
    assert backup.taken_at == claimed_at


def test_a_failure_keeps_the_agents_times_as_information(db):
    job = factories.JobFactory(kind=JobKind.BACKUP)
    api, _ = agent_client(job.agent)
    poll(api)
    agent_now = timezone.now() + timedelta(hours=3)
    body = {"status": "failed", "error": "boom", "finished_at": agent_now.isoformat()}
    assert complete(api, job, body).status_code == 200
    job.refresh_from_db()
    assert job.finished_at <= timezone.now()
    assert abs(job.reported_finished_at - agent_now) < timedelta(seconds=1)
