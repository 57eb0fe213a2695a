"""Corruption is recorded wherever it is found: a restore's checksum mismatch (issue #12, item 3)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import AlertKind, AlertSeverity, BackupStatus, ErrorClass, JobKind, Verification
from catalog.models import Alert, Backup
from catalog.services import jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.errors import InvalidRequest
from tests import factories
from tests.helpers import key_client


@pytest.fixture
def client_backups(app):
    """Three recovery points of one client: an expired one, a good one, and the newest."""
    client = factories.BackupClientFactory(application=app)
    now = timezone.now()
    old = factories.BackupFactory(
        client=client, taken_at=now - timedelta(days=3), status=BackupStatus.EXPIRED
    )
    good = factories.BackupFactory(client=client, taken_at=now - timedelta(days=2))
    newest = factories.BackupFactory(client=client, taken_at=now - timedelta(days=1))
    return old, good, newest


def restore(owner, backup):
    return services.submit_restore(
        actor=Actor.person(owner, Channel.WEB),
        backup=backup,
        target_agent=backup.client.agent,
        target_location="/r",
    )


def test_a_restore_failing_its_checksum_marks_the_backup_and_tells_the_truth(
    owner, client_backups, django_capture_on_commit_callbacks
):
    _, good, newest = client_backups
    request = restore(owner, newest)
    agent = newest.client.agent
    with django_capture_on_commit_callbacks(execute=True):
        jobs.claim(agent)
        jobs.complete_failure(
            agent, request.job_id, error="checksum mismatch", error_class=ErrorClass.CHECKSUM_MISMATCH
        )

    newest.refresh_from_db()
    assert newest.verification == Verification.FAILED
    assert newest.verification_job_id == request.job_id
    assert newest.verified_at is not None
    alert = Alert.objects.get(kind=AlertKind.RESTORE_TEST_FAILED, client=newest.client)
    assert alert.severity == AlertSeverity.CRITICAL
    assert alert.resolved_at is None
    request.refresh_from_db()
    assert request.status == RequestStatus.FAILED
    assert f"#{newest.pk}" in request.error and "damaged" in request.error
    assert f"newest good recovery point is #{good.pk} of {good.taken_at:%Y-%m-%d}" in request.error


def test_other_restore_failures_leave_the_backup_alone(owner, client_backups):
    _, _, newest = client_backups
    request = restore(owner, newest)
    jobs.claim(newest.client.agent)
    jobs.complete_failure(
        newest.client.agent, request.job_id, error="disk full", error_class=ErrorClass.DISK_FULL
    )
    newest.refresh_from_db()
    assert newest.verification == ""
    assert not Alert.objects.filter(kind=AlertKind.RESTORE_TEST_FAILED).exists()


def test_a_restore_of_a_known_corrupt_backup_is_refused_pointing_to_the_newest_good_one(
    owner, client_backups
):
    _, good, newest = client_backups
    Backup.objects.filter(pk=newest.pk).update(verification=Verification.FAILED, verified_at=timezone.now())
    newest.refresh_from_db()

    with pytest.raises(InvalidRequest) as refused:
        restore(owner, newest)

    message = str(refused.value.errors["backup"])
    assert "damaged" in message
    assert f"#{good.pk} of {good.taken_at:%Y-%m-%d}" in message
    assert restore(owner, good).pk  # the good one is accepted


def test_the_api_refuses_a_restore_of_a_corrupt_backup(owner, client_backups):
    _, good, newest = client_backups
    Backup.objects.filter(pk=newest.pk).update(verification=Verification.FAILED)
    api = key_client(owner)

    response = api.post(
        "/api/v1/restore-requests/",
        {"backup": newest.pk, "target_agent": newest.client.agent.hostname, "target_location": "/r"},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert f"#{good.pk}" in str(response.json())


def test_a_restore_test_job_kind_is_unchanged(owner, client_backups):
    """The restore test's own path still marks failed verification (one function now does both)."""
    _, _, newest = client_backups
    job = factories.JobFactory(kind=JobKind.RESTORE_TEST, client=newest.client, backup=newest)
    jobs.claim(job.agent)
    jobs.complete_failure(job.agent, job.pk, error="contents differ", error_class=ErrorClass.UNKNOWN)
    newest.refresh_from_db()
    assert newest.verification == Verification.FAILED
