"""Many "backup now" at once, and the scheduler among them: one open backup per client, never an error.

Runs on both databases with real threads and real connections: PostgreSQL
serialises on the client's row lock (and the constraint job_one_open_backup_per_client
backs it up), SQLite serialises writers with BEGIN IMMEDIATE.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.choices import JobKind, JobState
from catalog.models import BackupClient, Job
from catalog.services import jobs
from catalog.services.scheduler import schedule_due_backups
from tests import factories
from tests.helpers import run_at_once

THREADS = 12


@pytest.mark.django_db(transaction=True)
def test_concurrent_backup_now_queues_exactly_one_job():
    client = factories.BackupClientFactory()

    results = run_at_once([lambda: jobs.get_or_queue_backup(client) for _ in range(THREADS)])

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    [job] = Job.objects.filter(client=client)
    assert {found.pk for found, _ in results} == {job.pk}
    assert sorted(created for _, created in results) == [False] * (THREADS - 1) + [True]


@pytest.mark.django_db(transaction=True)
def test_backup_now_racing_the_scheduler_leaves_one_open_backup():
    client = factories.BackupClientFactory()
    BackupClient.objects.filter(pk=client.pk).update(next_backup_at=timezone.now() - timedelta(minutes=1))
    work: list[Callable[[], object]] = [lambda: jobs.get_or_queue_backup(client) for _ in range(THREADS - 2)]
    work += [schedule_due_backups, schedule_due_backups]

    results = run_at_once(work)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    [job] = Job.objects.filter(client=client, kind=JobKind.BACKUP, state=JobState.QUEUED)
    assert {r[0].pk for r in results if isinstance(r, tuple)} == {job.pk}
    queued_by_now = sum(created for r in results if isinstance(r, tuple) for created in r[1:])
    queued_by_schedule = sum(r for r in results if isinstance(r, int))
    assert queued_by_now + queued_by_schedule == 1
