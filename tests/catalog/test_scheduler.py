"""The scheduler queues due backups in bulk, once, at a cost that follows the due clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.choices import ClientStatus, JobState, JobTrigger
from catalog.models import BackupClient, Job
from catalog.services import jobs
from catalog.services.scheduler import schedule_due_backups
from tests import factories

NOW = datetime(2026, 11, 26, 2, 0, 30, tzinfo=UTC)


@pytest.fixture
def policy(db):
    return factories.ProtectionPolicyFactory(schedule="0 2 * * *")


def make_clients(policy, count, *, due=True):
    clients = [factories.BackupClientFactory(policy=policy) for _ in range(count)]
    moment = NOW - timedelta(minutes=1) if due else NOW + timedelta(hours=1)
    BackupClient.objects.filter(pk__in=[c.pk for c in clients]).update(next_backup_at=moment)
    return clients


def test_due_clients_get_one_job_each_and_move_to_their_next_run(policy):
    due = make_clients(policy, 3)
    make_clients(policy, 2, due=False)

    assert schedule_due_backups(now=NOW) == 3

    queued = Job.objects.filter(state=JobState.QUEUED, trigger=JobTrigger.SCHEDULE)
    assert sorted(queued.values_list("client_id", flat=True)) == sorted(c.pk for c in due)
    for client in due:
        client.refresh_from_db()
        assert client.next_backup_at == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert schedule_due_backups(now=NOW) == 0  # running again queues nothing more


def test_paused_and_pending_clients_are_not_scheduled(policy):
    (paused,) = make_clients(policy, 1)
    BackupClient.objects.filter(pk=paused.pk).update(status=ClientStatus.PAUSED)
    assert schedule_due_backups(now=NOW) == 0


def test_client_with_a_backup_still_open_gets_no_second_one(policy):
    (client,) = make_clients(policy, 1)
    factories.JobFactory(client=client, state=JobState.QUEUED)
    assert schedule_due_backups(now=NOW) == 0
    client.refresh_from_db()
    assert client.next_backup_at > NOW  # but its schedule moves on


def test_new_active_clients_get_a_first_run_time(policy):
    client = factories.BackupClientFactory(policy=policy)
    assert client.next_backup_at is None
    schedule_due_backups(now=NOW)
    client.refresh_from_db()
    assert client.next_backup_at == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def test_query_count_does_not_grow_with_due_clients(policy):
    make_clients(policy, 2)
    with CaptureQueriesContext(connection) as few:
        schedule_due_backups(now=NOW)
    Job.objects.all().delete()
    make_clients(policy, 12)
    BackupClient.objects.update(next_backup_at=NOW - timedelta(minutes=1))
    with CaptureQueriesContext(connection) as many:
        assert schedule_due_backups(now=NOW) == 14
    assert len(many) == len(few)


def test_backup_now_command_queues_a_job(db):
    client = factories.BackupClientFactory()
    call_command("backup_now", str(client.pk))
    job = Job.objects.get(client=client)
    assert (job.state, job.trigger) == (JobState.QUEUED, JobTrigger.USER)


def test_backup_now_command_names_the_open_backup_instead_of_queuing_another(db, capsys):
    client = factories.BackupClientFactory()
    call_command("backup_now", str(client.pk))
    call_command("backup_now", str(client.pk))

    job = Job.objects.get(client=client)
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"Queued backup job {job.pk} for {client}."
    assert second == f"A backup of {client} is already queued (job {job.pk}); nothing new queued."


def test_the_schedule_queues_nothing_on_top_of_a_backup_now(policy):
    (client,) = make_clients(policy, 1)
    asked = jobs.queue_backup(client, now=NOW - timedelta(seconds=5))

    assert schedule_due_backups(now=NOW) == 0
    assert list(Job.objects.filter(client=client).values_list("pk", flat=True)) == [asked.pk]
    client.refresh_from_db()
    assert client.next_backup_at > NOW
    # …and a backup now after the schedule queued one gets the scheduled job.
    Job.objects.filter(pk=asked.pk).update(state=JobState.CANCELLED)
    BackupClient.objects.filter(pk=client.pk).update(next_backup_at=NOW)
    assert schedule_due_backups(now=NOW) == 1
    scheduled, created = jobs.get_or_queue_backup(client)
    assert (scheduled.trigger, created) == (JobTrigger.SCHEDULE, False)
