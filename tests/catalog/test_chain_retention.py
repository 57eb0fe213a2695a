"""Issue #15: retention and legal hold of chains.

A base past its expiry waits for its last available dependent, then the whole chain goes in
one sweep (leaves first); a legal hold on a point holds its chain; holding an expired
incremental brings its bases back, or is refused when one is gone. Through the retention
sweep, the service and the admin's legal-hold form.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, JobKind, JobState
from catalog.errors import InvalidTransition
from catalog.models import Backup, Job
from catalog.services import jobs, retention
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def protected(db):
    """A files client on an incremental policy (not pytest-django's ``client``)."""
    return factories.incremental_client()


def chain_expiring(client, now, *expiry_days: float) -> list[Backup]:
    """A chain whose points expire ``expiry_days`` from ``now`` (negative: already due), oldest first."""
    points = factories.build_chain(client, len(expiry_days), start=now - timedelta(days=40))
    for point, days in zip(points, expiry_days, strict=True):
        Backup.objects.filter(pk=point.pk).update(expires_at=now + timedelta(days=days))
    return points


def statuses(points: list[Backup]) -> list[str]:
    return [Backup.objects.values_list("status", flat=True).get(pk=point.pk) for point in points]


def removals() -> set[int]:
    queued = Job.objects.filter(kind=JobKind.EXPIRE, state=JobState.QUEUED)
    return set(queued.values_list("backup_id", flat=True))


def run_removals(agent) -> None:
    for job in jobs.claim(agent, limit=100):
        jobs.complete_success(agent, job.pk, report=None)


# --- The sweep --------------------------------------------------------------------------------


def test_a_base_past_its_expiry_waits_for_its_dependents(protected, now):
    chain = chain_expiring(protected, now, -10, -5, 3)
    assert retention.expire_due(now=now) == 0
    assert statuses(chain) == [BackupStatus.AVAILABLE] * 3
    assert removals() == set()


def test_the_whole_chain_goes_in_one_sweep_once_its_last_dependent_is_due(protected, now):
    chain = chain_expiring(protected, now, -10, -5, -1)
    assert retention.expire_due(now=now) == 3
    assert statuses(chain) == [BackupStatus.EXPIRED] * 3
    assert removals() == {point.pk for point in chain}

    run_removals(protected.agent)
    assert statuses(chain) == [BackupStatus.DELETED] * 3
    assert retention.expire_due(now=now) == 0


def test_dependents_due_before_their_base_go_first_and_the_base_keeps_its_time(protected, now):
    chain = chain_expiring(protected, now, 5, -2, -1)
    assert retention.expire_due(now=now) == 2
    assert statuses(chain) == [BackupStatus.AVAILABLE, BackupStatus.EXPIRED, BackupStatus.EXPIRED]
    assert retention.expire_due(now=now + timedelta(days=6)) == 1


def test_long_chains_and_many_clients_go_in_one_sweep_whatever_the_batch(now):
    policy = factories.incremental_policy()
    agent = factories.AgentFactory(protocol=4)
    chains = [
        chain_expiring(factories.incremental_client(policy=policy, agent=agent), now, -9, -8, -7, -6)
        for _ in range(3)
    ]
    assert retention.expire_due(now=now, batch=2) == 12
    assert {status for chain in chains for status in statuses(chain)} == {BackupStatus.EXPIRED}


def test_a_base_an_open_backup_builds_on_waits_for_it(protected, now):
    (full,) = chain_expiring(protected, now, -1)
    job = factories.JobFactory(client=protected)
    jobs.claim(protected.agent)
    job.refresh_from_db()
    assert (job.level, job.base) == (BackupLevel.INCREMENTAL, full)

    assert retention.expire_due(now=now) == 0
    assert statuses([full]) == [BackupStatus.AVAILABLE]

    destination = jobs.backup_destination(job)
    report = jobs.BackupReport(4, 4, destination, "a" * 64, level="incremental", base=full.pk)
    jobs.complete_success(job.agent, job.pk, report=report)
    assert retention.expire_due(now=now) == 0  # now its recorded dependent holds it
    assert Backup.objects.get(job=job).base == full


def test_a_backup_planned_on_an_expired_point_takes_a_full(protected, now):
    (full,) = chain_expiring(protected, now, -1)
    assert retention.expire_due(now=now) == 1
    job = factories.JobFactory(client=protected)
    jobs.claim(protected.agent)
    job.refresh_from_db()
    assert (job.level, job.base) == (BackupLevel.FULL, None)
    assert job.level_reason == f"the last backup, {full.pk}, has expired"


# --- Legal hold ----------------------------------------------------------------------------------


def test_a_hold_on_the_newest_point_holds_its_chain(protected, now, backup_admin):
    chain = chain_expiring(protected, now, -10, -5, -1)
    retention.hold(chain[-1].pk, by=backup_admin, reason="Case 17")
    assert retention.expire_due(now=now) == 0
    assert statuses(chain) == [BackupStatus.AVAILABLE] * 3
    held = Backup.objects.filter(pk__in=[point.pk for point in chain]).order_by("taken_at")
    assert [point.legal_hold for point in held] == [False, False, True]

    retention.release(chain[-1].pk, by=backup_admin)
    assert retention.expire_due(now=now) == 3


def test_a_hold_in_the_middle_holds_what_it_needs_and_no_more(protected, now, backup_admin):
    chain = chain_expiring(protected, now, -10, -5, -1)
    retention.hold(chain[1].pk, by=backup_admin, reason="Case 17")
    assert retention.expire_due(now=now) == 1
    assert statuses(chain) == [BackupStatus.AVAILABLE, BackupStatus.AVAILABLE, BackupStatus.EXPIRED]


def test_holding_an_expired_incremental_brings_its_bases_back(protected, now, backup_admin):
    chain = chain_expiring(protected, now, -10, -5, -1)
    retention.expire_due(now=now)
    assert removals() == {point.pk for point in chain}

    retention.hold(chain[1].pk, by=backup_admin, reason="Audit 2026-4")

    assert statuses(chain) == [BackupStatus.AVAILABLE, BackupStatus.AVAILABLE, BackupStatus.EXPIRED]
    assert removals() == {chain[2].pk}  # the bases' removals are called off
    assert Backup.objects.restorable().filter(pk=chain[1].pk).exists()
    assert retention.expire_due(now=now) == 0


@pytest.mark.parametrize("held", [1, 2])
def test_holding_an_incremental_whose_base_is_deleted_is_refused(protected, now, backup_admin, held):
    chain = chain_expiring(protected, now, -10, -5, -1)
    retention.expire_due(now=now)
    removal = Job.objects.get(kind=JobKind.EXPIRE, backup=chain[0])
    jobs.claim(protected.agent, limit=100)
    jobs.complete_success(protected.agent, removal.pk, report=None)
    assert statuses(chain)[0] == BackupStatus.DELETED

    refused = f"Backup {chain[0].pk}, in the chain .* already been deleted"
    with pytest.raises(InvalidTransition, match=refused):
        retention.hold(chain[held].pk, by=backup_admin, reason="Case 17")
    assert not Backup.objects.filter(legal_hold=True).exists()


def test_holding_an_incremental_whose_base_is_being_removed_is_refused(protected, now, backup_admin):
    chain = chain_expiring(protected, now, -10, -1)
    retention.expire_due(now=now)
    # The base's removal is running, the incremental's still waits.
    Job.objects.filter(kind=JobKind.EXPIRE, backup=chain[1]).update(not_before=now + timedelta(hours=1))
    jobs.claim(protected.agent, limit=100)

    with pytest.raises(InvalidTransition, match=f"removing backup {chain[0].pk}, in the chain"):
        retention.hold(chain[1].pk, by=backup_admin, reason="Case 17")
    assert statuses(chain) == [BackupStatus.EXPIRED] * 2


def test_the_admins_legal_hold_on_an_expired_incremental_brings_its_chain_back(protected, now, root_client):
    chain = chain_expiring(protected, now, -10, -1)
    retention.expire_due(now=now)
    url = reverse("admin:catalog_backup_change", args=[chain[1].pk])

    response = root_client.post(url, {"legal_hold": "on", "legal_hold_reason": "Litigation 2026-9"})

    assert response.status_code == 302
    assert statuses(chain) == [BackupStatus.AVAILABLE] * 2
    assert Backup.objects.get(pk=chain[1].pk).legal_hold


def test_the_admin_says_why_a_hold_is_refused(protected, now, root_client):
    chain = chain_expiring(protected, now, -10, -1)
    retention.expire_due(now=now)
    Job.objects.filter(kind=JobKind.EXPIRE, backup=chain[1]).update(not_before=now + timedelta(hours=1))
    jobs.claim(protected.agent, limit=100)  # the base's removal is running
    url = reverse("admin:catalog_backup_change", args=[chain[1].pk])

    response = root_client.post(url, {"legal_hold": "on", "legal_hold_reason": "Case"}, follow=True)

    assert f"removing backup {chain[0].pk}, in the chain" in response.text
    assert not Backup.objects.get(pk=chain[1].pk).legal_hold
    assert statuses(chain) == [BackupStatus.EXPIRED] * 2
