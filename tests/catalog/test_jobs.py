"""The job lifecycle: retries with backoff, alerts once, lease expiry, cancel, classification."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import AlertKind, ErrorClass, JobState, JobTrigger
from catalog.errors import InvalidTransition, LeaseLost
from catalog.failures import classify
from catalog.models import Alert, Backup, Job
from catalog.services import jobs
from tests import factories


@pytest.fixture
def running_job(db):
    job = factories.JobFactory()
    jobs.claim(job.agent)
    job.refresh_from_db()
    return job


def fail_current(job: Job, error: str = "pg_dump: error: connection refused") -> Job:
    jobs.claim(job.agent, now=job.not_before)
    return jobs.complete_failure(job.agent, job.pk, error=error)


def test_failed_backup_is_retried_with_exponential_backoff_then_alerts_once(running_job, settings):
    settings.PORTAL_RETRY_BASE_SECONDS = 60
    policy = running_job.client.policy
    policy.max_retries = 2
    policy.save()

    first = jobs.complete_failure(running_job.agent, running_job.pk, error="Connection refused")
    retry1 = Job.objects.get(retry_of=first)
    assert retry1.not_before - first.finished_at == timedelta(seconds=60)
    retry1 = fail_current(retry1)
    retry2 = Job.objects.get(retry_of=retry1)
    assert retry2.attempt == 3
    assert retry2.not_before - retry1.finished_at == timedelta(seconds=120)
    fail_current(retry2)

    assert not Job.objects.filter(retry_of=retry2).exists()  # retries exhausted
    alert = Alert.objects.get()
    assert (alert.kind, alert.severity, alert.client_id) == (
        AlertKind.JOB_FAILED,
        "critical",
        first.client_id,
    )
    assert "3 times" in alert.message


def test_a_second_exhausted_failure_does_not_raise_a_second_alert(running_job):
    policy = running_job.client.policy
    policy.max_retries = 0
    policy.save()
    jobs.complete_failure(running_job.agent, running_job.pk, error="boom")
    again = factories.JobFactory(client=running_job.client)
    fail_current(again)
    assert Alert.objects.count() == 1


def test_good_backup_closes_the_failure_alert(running_job):
    policy = running_job.client.policy
    policy.max_retries = 0
    policy.save()
    jobs.complete_failure(running_job.agent, running_job.pk, error="boom")
    good = factories.JobFactory(client=running_job.client)
    jobs.claim(good.agent)
    report = jobs.BackupReport(size=1, stored_size=1, location="a/b/job-1", sha256="0" * 64)

    jobs.complete_success(good.agent, good.pk, report=report)

    assert Alert.objects.get().resolved_at is not None


def test_expired_lease_fails_the_attempt_and_queues_a_retry(running_job):
    later = running_job.lease_expires_at + timedelta(seconds=1)

    assert jobs.reap_expired_leases(now=later) == 1

    running_job.refresh_from_db()
    assert (running_job.state, running_job.error_class) == (JobState.FAILED, ErrorClass.LEASE_EXPIRED)
    retry = Job.objects.get(retry_of=running_job)
    assert (retry.state, retry.trigger, retry.attempt) == (JobState.QUEUED, JobTrigger.RETRY, 2)
    assert jobs.reap_expired_leases(now=later) == 0


def test_late_report_after_the_lease_expired_is_refused(running_job):
    jobs.reap_expired_leases(now=running_job.lease_expires_at + timedelta(seconds=1))
    report = jobs.BackupReport(size=1, stored_size=1, location="a/b/c", sha256="0" * 64)
    with pytest.raises(LeaseLost):
        jobs.complete_success(running_job.agent, running_job.pk, report=report)
    assert not Backup.objects.exists()


def test_lease_is_not_reaped_while_progress_keeps_coming(running_job):
    soon = running_job.lease_expires_at - timedelta(seconds=1)
    jobs.record_progress(running_job.agent, running_job.pk, bytes_done=10, bytes_total=None, now=soon)
    assert jobs.reap_expired_leases(now=running_job.lease_expires_at + timedelta(seconds=1)) == 0


def test_cancel_queued_job_closes_it_and_running_job_asks_the_agent(db):
    queued = factories.JobFactory()
    jobs.cancel(queued.pk)
    queued.refresh_from_db()
    assert queued.state == JobState.CANCELLED

    running = factories.JobFactory()
    jobs.claim(running.agent)
    jobs.cancel(running.pk)
    jobs.complete_failure(running.agent, running.pk, error="stopped: cancelled by the portal")
    running.refresh_from_db()
    assert running.state == JobState.CANCELLED
    assert not Job.objects.filter(retry_of=running).exists()  # a cancelled job is not retried
    with pytest.raises(InvalidTransition):
        jobs.cancel(running.pk)


def test_backup_now_refuses_a_client_without_agent(db):
    client = factories.BackupClientFactory(agent=None, status="pending_enrolment")
    with pytest.raises(InvalidTransition):
        jobs.queue_backup(client)


def test_restore_of_a_deleted_backup_is_refused(db):
    taken = timezone.now() - timedelta(days=40)
    backup = factories.BackupFactory(
        status="deleted", taken_at=taken, expires_at=taken + timedelta(days=30), deleted_at=timezone.now()
    )
    with pytest.raises(InvalidTransition):
        jobs.queue_restore(backup, agent=backup.client.agent, target_location="/restore", overwrite=False)


@pytest.mark.parametrize(
    "error, expected",
    [
        ("tar: /srv/x: Cannot open: Permission denied", ErrorClass.PERMISSION_DENIED),
        ("write error: No space left on device", ErrorClass.DISK_FULL),
        (
            'pg_dump: error: connection to server at "db" failed: Connection refused',
            ErrorClass.DATABASE_UNREACHABLE,
        ),
        ("mysqldump: Got error: 2002: Can't connect to local MySQL server", ErrorClass.DATABASE_UNREACHABLE),
        ("command not found: /opt/tool/backup", ErrorClass.COMMAND_NOT_FOUND),
        ("[Errno 2] No such file or directory: 'pg_dump'", ErrorClass.COMMAND_NOT_FOUND),
        ("the command timed out after 3600 s", ErrorClass.TIMEOUT),
        ("checksum mismatch: stored data does not match the catalog", ErrorClass.CHECKSUM_MISMATCH),
        ("something odd", ErrorClass.UNKNOWN),
    ],
)
def test_failures_are_classified_from_the_tools_messages(error, expected):
    assert classify(error) == expected


def test_classification_reads_the_log_tail_too():
    assert classify("exit status 2", "tar: /srv: Permission denied\n") == ErrorClass.PERMISSION_DENIED


def test_watch_silent_agents_alerts_once_per_silence(db, settings):
    from catalog.services import agents

    agent = factories.AgentFactory(last_seen_at=timezone.now() - timedelta(hours=2))
    factories.AgentFactory()  # a live one

    assert agents.watch_silent_agents() == 1
    assert agents.watch_silent_agents() == 0
    agents.heartbeat(agent, version="0.1.0", plugins=[])
    assert Alert.objects.get().resolved_at is not None


@pytest.mark.parametrize("status", ["paused", "retired"])
def test_backup_now_refuses_a_paused_or_retired_client(db, status):
    client = factories.BackupClientFactory(status=status)
    with pytest.raises(InvalidTransition):
        jobs.queue_backup(client)


# --- One open backup per client ---------------------------------------------------------------


def test_a_second_backup_now_answers_with_the_open_job(db):
    client = factories.BackupClientFactory()

    first, created = jobs.get_or_queue_backup(client)
    again, created_again = jobs.get_or_queue_backup(client)
    third = jobs.queue_backup(client)

    assert (created, created_again) == (True, False)
    assert again.pk == third.pk == first.pk
    assert Job.objects.filter(client=client).count() == 1

    jobs.claim(first.agent)  # running now: still the one open backup
    running, created = jobs.get_or_queue_backup(client)
    assert (running.pk, running.state, created) == (first.pk, JobState.RUNNING, False)


@pytest.mark.parametrize("finish", ["succeed", "fail", "cancel"])
def test_once_the_open_backup_is_closed_a_new_one_is_queued(db, finish):
    client = factories.BackupClientFactory()
    client.policy.max_retries = 0
    client.policy.save()
    first = jobs.queue_backup(client)
    if finish == "cancel":
        jobs.cancel(first.pk)
    else:
        jobs.claim(first.agent)
        if finish == "succeed":
            report = jobs.BackupReport(
                size=1, stored_size=1, location=jobs.backup_destination(first), sha256="0" * 64
            )
            jobs.complete_success(first.agent, first.pk, report=report)
        else:
            jobs.complete_failure(first.agent, first.pk, error="boom")

    second, created = jobs.get_or_queue_backup(client)

    assert created and second.pk != first.pk


def test_a_failed_backup_is_still_retried_and_backup_now_brings_the_retry_forward(running_job, settings):
    settings.PORTAL_RETRY_BASE_SECONDS = 3600
    jobs.complete_failure(running_job.agent, running_job.pk, error="Connection refused")
    retry = Job.objects.get(retry_of=running_job)
    assert retry.not_before > timezone.now() + timedelta(minutes=59)  # the failed job is closed: retried

    now = timezone.now()
    job, created = jobs.get_or_queue_backup(running_job.client, now=now)

    assert (job.pk, created) == (retry.pk, False)
    retry.refresh_from_db()
    assert retry.not_before == now  # asked for now, so it runs now
    assert [j.pk for j in jobs.claim(running_job.agent, now=now)] == [retry.pk]


def test_a_backup_queued_behind_the_check_is_found_after_the_constraint_refuses(db, monkeypatch):
    client = factories.BackupClientFactory()
    sneaked_in = factories.JobFactory(client=client)  # e.g. a writer that took no lock
    real_lookup = jobs.open_backup_of
    lookups = []

    def blind_first_lookup(client_id):
        lookups.append(client_id)
        return None if len(lookups) == 1 else real_lookup(client_id)

    monkeypatch.setattr(jobs, "open_backup_of", blind_first_lookup)

    job, created = jobs.get_or_queue_backup(client)

    assert (job.pk, created) == (sneaked_in.pk, False)
    assert len(lookups) == 2  # the insert was tried, refused in its savepoint, then the open job read
    assert Job.objects.filter(client=client).count() == 1
    assert (
        Job.objects.filter(client=client).update(state=JobState.CANCELLED) == 1
    )  # the transaction is usable
