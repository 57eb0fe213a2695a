"""Automated restore testing: prove, on a schedule, that backups really restore.

Each policy sets ``restore_test_interval_days``. A client is due when it has
no successful restore test within that interval and none queued or running.
Which recovery point: alternately the newest one, and the oldest one never
verified (or verified longest ago) — so tests follow the fresh data and, over
time, reach back through a spread of ages instead of always the last night.

Only points that can be rebuilt are tested: available, and, for an incremental,
its chain restorable (``chains.restorable_bases``) and an agent that restores chains.
A point that failed verification itself may be tested again: the test is what
decides its verification, and a pass clears a false alarm.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, ClientStatus, JobKind, JobState, JobTrigger
from catalog.models import Backup, BackupClient, Job, ProtectionPolicy
from catalog.services import chains


def due_clients(policy: ProtectionPolicy, now: datetime):
    """Active clients of ``policy`` without a passed restore test within its interval."""
    cutoff = now - timedelta(days=policy.restore_test_interval_days)
    tested = Job.objects.filter(
        kind=JobKind.RESTORE_TEST, state=JobState.SUCCEEDED, finished_at__gte=cutoff
    ).values("client_id")
    busy = Job.objects.filter(kind=JobKind.RESTORE_TEST, state__in=JobState.open()).values("client_id")
    return (
        BackupClient.objects.filter(policy=policy, status=ClientStatus.ACTIVE, agent__isnull=False)
        .select_related("agent")
        .exclude(pk__in=tested)
        .exclude(pk__in=busy)
        .annotate(tests_run=Count("jobs", filter=Q(jobs__kind=JobKind.RESTORE_TEST)))
    )


def testable(client: BackupClient):
    """The client's points a restore test can rebuild on its agent (see the module's docstring)."""
    points = Backup.objects.filter(chains.restorable_bases(), client=client, status=BackupStatus.AVAILABLE)
    if not client.agent.restores_chains:
        points = points.filter(level=BackupLevel.FULL)
    return points


def pick_backup(client: BackupClient) -> Backup | None:
    available = testable(client)
    if client.tests_run % 2 == 0:
        return available.order_by("-taken_at").first()
    return available.order_by(F("verified_at").asc(nulls_first=True), "taken_at").first()


def schedule(*, now: datetime | None = None) -> int:
    """Queue a restore test for every due client; returns how many were queued."""
    now = now or timezone.now()
    queued = 0
    for policy in ProtectionPolicy.objects.all():
        with transaction.atomic():
            jobs = []
            for client in due_clients(policy, now):
                backup = pick_backup(client)
                if backup is None:
                    continue  # nothing to test yet; the RPO watch speaks for this client
                jobs.append(
                    Job(
                        kind=JobKind.RESTORE_TEST,
                        client=client,
                        agent_id=client.agent_id,
                        backup=backup,
                        trigger=JobTrigger.SYSTEM,
                        created_at=now,
                        not_before=now,
                    )
                )
            Job.objects.bulk_create(jobs)
            queued += len(jobs)
    return queued
