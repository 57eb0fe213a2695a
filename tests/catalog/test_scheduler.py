"""The scheduler queues due backups in bulk, once, at a cost that follows the due clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.choices import ClientStatus, JobKind, JobState, JobTrigger, Plugin
from catalog.models import BackupClient, Job
from catalog.services import jobs
from catalog.services.scheduler import BATCH, schedule_due_backups
from catalog.signals import job_changed
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


# --- Issue #13: 10,000 due clients in one tick ----------------------------------------------------


def test_clients_of_different_policies_get_their_own_next_run(db):
    daily = factories.ProtectionPolicyFactory(schedule="0 2 * * *")
    four_hourly = factories.ProtectionPolicyFactory(schedule="0 */4 * * *")
    also_daily = factories.ProtectionPolicyFactory(schedule="0 2 * * *")
    clients = {policy: make_clients(policy, 3) for policy in (daily, four_hourly, also_daily)}

    assert schedule_due_backups(now=NOW, batch=4) == 9  # batches mix the policies

    expected = {
        daily: datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        four_hourly: datetime(2026, 11, 26, 4, 0, tzinfo=UTC),
        also_daily: datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
    }
    for policy, members in clients.items():
        assert expected[policy] == policy.next_run_after(NOW)
        for client in members:
            client.refresh_from_db()
            assert client.next_backup_at == expected[policy], policy.schedule


def test_busy_clients_are_rescheduled_not_queued_twice_across_batches(policy):
    clients = make_clients(policy, 7)
    queued_before = factories.JobFactory(client=clients[1], state=JobState.QUEUED)
    running = factories.JobFactory(
        client=clients[4], state=JobState.RUNNING, started_at=NOW, lease_expires_at=NOW + timedelta(hours=1)
    )
    factories.JobFactory(client=clients[5], state=JobState.FAILED)  # finished: not busy

    assert schedule_due_backups(now=NOW, batch=3) == 5

    for client in clients:
        open_jobs = Job.objects.filter(client=client, state__in=JobState.open())
        assert open_jobs.count() == 1, client
        client.refresh_from_db()
        assert client.next_backup_at == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert Job.objects.get(client=clients[1], state=JobState.QUEUED) == queued_before
    assert Job.objects.get(client=clients[4], state__in=JobState.open()) == running
    assert schedule_due_backups(now=NOW, batch=3) == 0


def test_a_scheduled_job_is_what_the_orm_would_have_made(policy):
    (client,) = make_clients(policy, 1)

    schedule_due_backups(now=NOW)

    job = Job.objects.get(client=client)
    expected = Job(
        kind=JobKind.BACKUP,
        client_id=client.pk,
        agent_id=client.agent_id,
        trigger=JobTrigger.SCHEDULE,
        created_at=NOW,
        not_before=NOW,
    )
    for field in Job._meta.concrete_fields:
        if not field.primary_key:
            assert getattr(job, field.attname) == getattr(expected, field.attname), field.name
    assert (job.state, job.attempt, job.agent_id) == (JobState.QUEUED, 1, client.agent_id)


def test_jobs_are_numbered_in_the_order_their_clients_fell_due(policy):
    first, second, third = make_clients(policy, 3)
    for client, minutes in ((first, 1), (second, 30), (third, 10)):
        BackupClient.objects.filter(pk=client.pk).update(next_backup_at=NOW - timedelta(minutes=minutes))

    schedule_due_backups(now=NOW)

    in_order = Job.objects.order_by("pk").values_list("client_id", flat=True)
    assert list(in_order) == [second.pk, third.pk, first.pk]


def test_scheduled_jobs_are_not_announced(policy, django_capture_on_commit_callbacks):
    make_clients(policy, 3)
    heard = []

    def listener(sender, **kwargs):
        heard.append(kwargs)

    job_changed.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert schedule_due_backups(now=NOW) == 3
    finally:
        job_changed.disconnect(listener)
    assert heard == []


def count_tick_queries(policy, due: int, *, batch: int) -> int:
    Job.objects.all().delete()
    BackupClient.objects.all().update(next_backup_at=NOW + timedelta(hours=1))
    clients = list(BackupClient.objects.order_by("pk")[:due])
    missing = due - len(clients)
    clients += make_clients(policy, missing) if missing > 0 else []
    BackupClient.objects.filter(pk__in=[c.pk for c in clients]).update(
        next_backup_at=NOW - timedelta(minutes=1)
    )
    factories.JobFactory(client=clients[0], state=JobState.QUEUED)  # one busy client in each run
    with CaptureQueriesContext(connection) as queries:
        assert schedule_due_backups(now=NOW, batch=batch) == due - 1
    return len(queries)


def test_queries_of_a_tick_follow_the_batches_not_the_clients(policy):
    batch = 6
    one_batch = [count_tick_queries(policy, due, batch=batch) for due in (2, 5)]
    two_batches = [count_tick_queries(policy, due, batch=batch) for due in (7, 11)]
    three_batches = count_tick_queries(policy, 13, batch=batch)

    assert one_batch[0] == one_batch[1]  # within a batch, more clients cost no more queries
    assert two_batches[0] == two_batches[1]
    per_batch = two_batches[0] - one_batch[0]
    assert three_batches - two_batches[0] == per_batch  # each batch costs the same
    # A batch: lock the due clients, find the busy ones, queue, move on (one policy: one
    # UPDATE); the first also reads the policy; transaction.atomic's savepoint and release.
    assert per_batch <= 6
    assert one_batch[0] <= 1 + per_batch + 1  # plus the check for never-scheduled clients


def test_more_due_clients_than_a_full_batch(policy):
    # Full-size batches: every IN list of a batch as long as BATCH (SQLite's variable limit included).
    agent, application = factories.AgentFactory(), factories.ApplicationFactory()
    BackupClient.objects.bulk_create(
        BackupClient(
            application=application,
            agent=agent,
            name=f"bulk-{n}",
            hostname=agent.hostname,
            plugin=Plugin.FILES,
            options={"paths": ["/srv/data"]},
            policy=policy,
            status=ClientStatus.ACTIVE,
            next_backup_at=NOW - timedelta(seconds=n),
        )
        for n in range(BATCH + 5)
    )

    assert schedule_due_backups(now=NOW) == BATCH + 5

    assert Job.objects.values("client_id").distinct().count() == BATCH + 5
    assert not BackupClient.objects.filter(next_backup_at__lte=NOW).exists()
