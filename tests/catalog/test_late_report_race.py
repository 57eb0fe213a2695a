"""A late success report races the agent claiming the retry: exactly one of them wins.

Real threads, real connections (meant for PostgreSQL, where the retry's row lock
and SKIP LOCKED decide; SQLite serialises the two with BEGIN IMMEDIATE).
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from catalog.choices import JobKind, JobState
from catalog.errors import LeaseLost
from catalog.models import Backup, Job
from catalog.services import jobs
from tests import factories

ROUNDS = 12


def _reaped_with_due_retry() -> tuple[Job, Job]:
    job = factories.JobFactory(kind=JobKind.BACKUP)
    jobs.claim(job.agent)
    job.refresh_from_db()
    jobs.reap_expired_leases(now=job.lease_expires_at + timedelta(seconds=1))
    retry = Job.objects.get(retry_of=job)
    Job.objects.filter(pk=retry.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    return job, retry


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_late_report_and_retry_claim_race_exactly_one_wins(round_):
    # The claimer starts a little later each round, so both orders (and the overlap) are tried.
    delay = round_ * 0.002
    job, retry = _reaped_with_due_retry()
    agent = job.agent
    report = jobs.BackupReport(
        size=4,
        stored_size=4,
        location=jobs.backup_destination(job),
        sha256=hashlib.sha256(b"x").hexdigest(),
        manifest={"job": job.pk},
    )
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}
    errors: list[BaseException] = []

    def reporter() -> None:
        try:
            barrier.wait()
            jobs.complete_success(agent, job.pk, report=report)
            outcome["report"] = "accepted"
        except LeaseLost:
            outcome["report"] = "lease_lost"
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def claimer() -> None:
        try:
            barrier.wait()
            time.sleep(delay)
            outcome["claimed"] = [j.pk for j in jobs.claim(agent)]
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=reporter), threading.Thread(target=claimer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    job.refresh_from_db()
    retry.refresh_from_db()
    if outcome["report"] == "accepted":
        assert job.state == JobState.SUCCEEDED
        assert retry.state == JobState.CANCELLED
        assert outcome["claimed"] == []
        assert Backup.objects.filter(job=job).count() == 1
    else:
        assert job.state == JobState.FAILED
        assert retry.state == JobState.RUNNING
        assert outcome["claimed"] == [retry.pk]
        assert not Backup.objects.filter(job=job).exists()
    # Never both, never neither.
    assert (job.state == JobState.SUCCEEDED) != (retry.state == JobState.RUNNING)
