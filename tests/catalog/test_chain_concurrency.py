"""Issue #15: retention racing a backup that builds on the point it expires.

Real threads, each with its own connection (``run_at_once``), on whichever database
DATABASE_URL names; PostgreSQL is the one where the race is real (SQLite serialises
writers with BEGIN IMMEDIATE). Whatever the interleaving, never an incremental recorded on
an expired base: the claim locks the base it plans on, the sweep skips a locked point and
asks again under its locks, the report locks the base again, and the database's trigger
refuses what would slip through all the same.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, JobState
from catalog.errors import LeaseLost
from catalog.models import Backup, Job
from catalog.services import jobs, retention
from tests import factories
from tests.helpers import run_at_once

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 8
SHA = "b" * 64


def due_full() -> tuple[Backup, Job]:
    """A client's only point, a full past its expiry, and its queued backup."""
    client = factories.incremental_client()
    (full,) = factories.build_chain(client, 1, start=timezone.now() - timedelta(days=40))
    Backup.objects.filter(pk=full.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    return full, factories.JobFactory(client=client)


def incremental_report(job: Job, base: Backup) -> jobs.BackupReport:
    destination = jobs.backup_destination(job)
    manifest = {"level": "incremental"}
    return jobs.BackupReport(4, 4, destination, SHA, manifest=manifest, level="incremental", base=base.pk)


def no_incremental_on_a_base_that_is_not_available() -> None:
    broken = Backup.objects.filter(status=BackupStatus.AVAILABLE, base__isnull=False).exclude(
        base__status=BackupStatus.AVAILABLE
    )
    assert not broken.exists(), list(broken.values("pk", "base_id", "base__status"))


def test_a_claim_racing_the_sweep_plans_on_an_available_base_or_takes_a_full():
    for _ in range(ROUNDS):
        full, job = due_full()

        results = run_at_once([retention.expire_due, lambda job=job: jobs.claim(job.agent)])

        assert not [result for result in results if isinstance(result, BaseException)], results
        job.refresh_from_db()
        full.refresh_from_db()
        if job.level == BackupLevel.INCREMENTAL:
            # The claim saw it first: the sweep left it alone, and the report is recorded.
            assert (job.base, full.status) == (full, BackupStatus.AVAILABLE)
            jobs.complete_success(job.agent, job.pk, report=incremental_report(job, full))
            assert Backup.objects.get(job=job).base == full
        else:
            # The sweep took it first: the claim waited for it and planned a full.
            assert full.status == BackupStatus.EXPIRED
            assert job.level_reason == f"the last backup, {full.pk}, has expired"
        assert retention.expire_due() == 0 or full.status == BackupStatus.EXPIRED
        no_incremental_on_a_base_that_is_not_available()


def test_a_report_racing_the_sweep_keeps_its_base():
    for _ in range(ROUNDS):
        full, job = due_full()
        jobs.claim(job.agent)
        job.refresh_from_db()
        assert job.base == full

        results = run_at_once(
            [
                retention.expire_due,
                lambda job=job, full=full: jobs.complete_success(
                    job.agent, job.pk, report=incremental_report(job, full)
                ),
            ]
        )

        assert not [result for result in results if isinstance(result, BaseException)], results
        assert Backup.objects.get(job=job).base == full
        assert Backup.objects.get(pk=full.pk).status == BackupStatus.AVAILABLE
        no_incremental_on_a_base_that_is_not_available()


def test_a_late_report_racing_the_sweep_is_recorded_or_refused_never_left_on_an_expired_base():
    for _ in range(ROUNDS):
        full, job = due_full()
        jobs.claim(job.agent)
        Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        jobs.reap_expired_leases()  # failed, retry queued: no open job holds the base now
        job.refresh_from_db()

        results = run_at_once(
            [
                retention.expire_due,
                lambda job=job, full=full: jobs.complete_success(
                    job.agent, job.pk, report=incremental_report(job, full)
                ),
            ]
        )

        unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, LeaseLost)]
        assert not unexpected, results
        recorded = Backup.objects.filter(job=job).first()
        full.refresh_from_db()
        if recorded is not None:
            assert full.status == BackupStatus.AVAILABLE
        else:
            assert full.status == BackupStatus.EXPIRED
            assert any(isinstance(result, LeaseLost) for result in results)
        no_incremental_on_a_base_that_is_not_available()


def test_a_claim_waits_for_a_sweep_holding_the_base_and_then_takes_a_full():
    """The interleaving pinned down: the sweep has locked and expired the base, not yet committed."""
    full, job = due_full()
    expired, committed = threading.Event(), threading.Event()

    def sweep_step() -> None:
        try:
            with transaction.atomic():
                Backup.objects.select_for_update().filter(pk=full.pk).update(status=BackupStatus.EXPIRED)
                expired.set()
                committed.wait(0.5)  # the claim is blocked meanwhile
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep_step)
    sweeper.start()
    assert expired.wait(10)
    claimed = jobs.claim(job.agent)  # waits for the sweep's lock (PostgreSQL) or its write (SQLite)
    committed.set()
    sweeper.join(10)

    assert [c.pk for c in claimed] == [job.pk]
    job.refresh_from_db()
    assert (job.level, job.base, job.state) == (BackupLevel.FULL, None, JobState.RUNNING)
    assert job.level_reason == f"the last backup, {full.pk}, has expired"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED: on SQLite a second writer waits")
def test_the_sweep_passes_over_a_base_a_claim_holds():
    full, job = due_full()
    locked, release = threading.Event(), threading.Event()

    def claim_in_progress() -> None:
        try:
            with transaction.atomic():
                list(Backup.objects.select_for_update().filter(pk=full.pk))  # what plan_level holds
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=claim_in_progress)
    holder.start()
    assert locked.wait(10)
    try:
        assert retention.expire_due() == 0
    finally:
        release.set()
        holder.join(10)
    assert Backup.objects.get(pk=full.pk).status == BackupStatus.AVAILABLE
