"""Schedulers at once, and "backup now" among them: every due client gets exactly one open backup.

Real threads, real connections. The first tests run on both databases: PostgreSQL
splits the due clients between schedulers with SELECT … FOR UPDATE SKIP LOCKED,
SQLite serialises writers with BEGIN IMMEDIATE. The last two show the PostgreSQL
mechanism itself (a scheduler skips the clients another transaction holds, without
waiting), which on SQLite would be a writer waiting for the other: PostgreSQL only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from catalog.choices import JobKind, JobState, JobTrigger
from catalog.models import BackupClient, Job
from catalog.services import jobs, scheduler
from catalog.services.scheduler import schedule_due_backups
from tests import factories
from tests.helpers import run_at_once

NOW = datetime(2026, 11, 26, 2, 0, 30, tzinfo=UTC)
DAILY = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
FOUR_HOURLY = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
POSTGRESQL_ONLY = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SKIP LOCKED: on SQLite a second writer waits instead"
)


def due_clients(count: int) -> list[BackupClient]:
    """``count`` due clients, alternately on a daily and a four-hourly policy, due a second apart."""
    policies = [
        factories.ProtectionPolicyFactory(schedule="0 2 * * *"),
        factories.ProtectionPolicyFactory(schedule="0 */4 * * *"),
    ]
    agent = factories.AgentFactory()
    clients = [factories.BackupClientFactory(agent=agent, policy=policies[n % 2]) for n in range(count)]
    for n, client in enumerate(clients):
        BackupClient.objects.filter(pk=client.pk).update(next_backup_at=NOW - timedelta(seconds=count - n))
    return clients


def assert_one_open_backup_each(clients: list[BackupClient]) -> None:
    for client in clients:
        assert Job.objects.filter(client=client, kind=JobKind.BACKUP, state__in=JobState.open()).count() == 1
        client.refresh_from_db()
        assert client.next_backup_at == (DAILY if client.policy.schedule == "0 2 * * *" else FOUR_HOURLY)


@pytest.mark.django_db(transaction=True)
def test_schedulers_at_once_queue_every_due_client_exactly_once():
    clients = due_clients(60)
    busy = clients[::10]
    for client in busy:
        factories.JobFactory(client=client, state=JobState.QUEUED)

    results = run_at_once([lambda: schedule_due_backups(now=NOW, batch=4) for _ in range(4)])

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    scheduled = Job.objects.filter(trigger=JobTrigger.SCHEDULE, created_at=NOW)
    assert sum(results) == scheduled.count() == len(clients) - len(busy)
    assert not scheduled.filter(client__in=busy).exists()
    assert_one_open_backup_each(clients)


@pytest.mark.django_db(transaction=True)
def test_backup_now_during_the_ticks_leaves_one_open_backup_per_client():
    clients = due_clients(12)
    asked = clients[::2]
    work: list[Callable[[], object]] = [lambda: schedule_due_backups(now=NOW, batch=3) for _ in range(2)]
    work += [lambda client=client: jobs.get_or_queue_backup(client) for client in asked for _ in range(2)]

    results = run_at_once(work)
    # A client a backup now held while the ticks ran was skipped: still due, the next tick
    # (a minute later) finds it busy and moves it on.
    assert schedule_due_backups(now=NOW) == 0

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    by_schedule = sum(r for r in results if isinstance(r, int))
    by_now = sum(created for r in results if isinstance(r, tuple) for created in r[1:])
    assert by_schedule + by_now == len(clients)
    assert by_schedule >= len(clients) - len(asked)
    for found, _ in (r for r in results if isinstance(r, tuple)):  # backup now names the open job
        assert found.state == JobState.QUEUED
        assert Job.objects.get(client_id=found.client_id, state=JobState.QUEUED).pk == found.pk
    assert_one_open_backup_each(clients)


@POSTGRESQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_a_scheduler_skips_the_clients_another_transaction_holds_and_a_later_tick_takes_them():
    clients = due_clients(8)
    held = clients[:3]  # the earliest due: a scheduler would take them first
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # as "backup now" does: the client's row, locked until commit
        try:
            with transaction.atomic():
                list(BackupClient.objects.select_for_update().filter(pk__in=[c.pk for c in held]))
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        assert schedule_due_backups(now=NOW, batch=2) == 5  # without waiting for the lock
    finally:
        release.set()
        holder.join(timeout=30)
    assert not Job.objects.filter(client__in=held).exists()
    assert BackupClient.objects.filter(pk__in=[c.pk for c in held], next_backup_at__lte=NOW).count() == 3

    assert schedule_due_backups(now=NOW, batch=2) == 3
    assert_one_open_backup_each(clients)


@POSTGRESQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_two_schedulers_split_the_work(monkeypatch):
    clients = due_clients(12)
    first_holds, second_done = threading.Event(), threading.Event()
    insert_jobs = scheduler._insert_jobs

    def first_waits_for_the_second(*args):
        # The first scheduler holds its first batch (5 clients locked) until the second has finished.
        if threading.current_thread().name == "first" and not second_done.is_set():
            first_holds.set()
            assert second_done.wait(timeout=30), "the second scheduler waited for the first one's locks"
        return insert_jobs(*args)

    monkeypatch.setattr(scheduler, "_insert_jobs", first_waits_for_the_second)
    queued: dict[str, object] = {}

    def tick(name: str) -> None:
        try:
            queued[name] = schedule_due_backups(now=NOW, batch=5)
        except BaseException as exc:  # surfaced below
            queued[name] = exc
        finally:
            if name == "second":
                second_done.set()
            connection.close()

    first = threading.Thread(target=tick, args=("first",), name="first")
    first.start()
    assert first_holds.wait(timeout=30)
    second = threading.Thread(target=tick, args=("second",), name="second")
    second.start()
    second.join(timeout=30)
    first.join(timeout=30)

    assert queued == {"first": 5, "second": 7}
    assert_one_open_backup_each(clients)
