"""Hand-computed estates for the report tests.

Every figure the tests assert is worked out in the docstrings here, from clean
boundaries (midnights, whole gigabytes), so a reader can check them on paper.
1 GB = 10^9 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from catalog.choices import BackupStatus, JobKind, JobState
from catalog.models import Backup, BackupClient, CostCenter, Job
from reports.models import PolicyPrice
from reports.periods import Month
from tests import factories

GB = 10**9
OCTOBER = Month(2026, 10)


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def backup(
    client,
    taken: datetime,
    stored_gb: float,
    *,
    size_gb: float | None = None,
    deleted: datetime | None = None,
    **fields,
) -> Backup:
    """A recovery point; a deleted one expired at the moment it was deleted."""
    if deleted is not None:
        fields.update(status=BackupStatus.DELETED, deleted_at=deleted, expires_at=deleted)
    return factories.BackupFactory(
        client=client,
        taken_at=taken,
        stored_size_bytes=int(stored_gb * GB),
        size_bytes=int((size_gb if size_gb is not None else stored_gb) * GB),
        job__created_at=taken,
        job__started_at=taken,
        job__finished_at=taken + timedelta(minutes=10),
        **fields,
    )


def job(
    client,
    kind: str,
    finished: datetime,
    *,
    state: str = JobState.SUCCEEDED,
    minutes: int = 10,
    backup_=None,
    **fields,
) -> Job:
    """A finished job of ``kind`` that ran ``minutes`` long."""
    started = finished - timedelta(minutes=minutes)
    if kind != JobKind.BACKUP and backup_ is None:
        backup_ = Backup.objects.filter(client=client).order_by("taken_at").first()
    return factories.JobFactory(
        client=client, kind=kind, state=state, backup=backup_, created_at=started - timedelta(minutes=1),
        not_before=started, started_at=started, finished_at=finished, **fields,
    )  # fmt: skip


@dataclass
class ChargebackEstate:
    """October 2026 (31 days) and September (30 days).

    CC-1 Retail — orders (owner) — ``orders-db`` on Silver at 0.0500/GB-month:
      A1 100 GB stored, taken 20 Sep, never deleted: all October → 100.00 GB-months;
         in September 11 of 30 days → 36.67 GB-months → 1.83.
      A2  62 GB stored (80 GB front-end), taken 16 Oct: 16 of 31 days → 32.00 GB-months.
      A3  31 GB, taken 1 Oct, deleted 11 Oct: 10 of 31 days → 10.00 GB-months.
      → 142.00 GB-months × 0.05 = 7.10; last month 1.83; change +5.27.
      Protected size: A2's front-end size, 80.00 GB. Backups in October: 2 (A2, A3). Restores: 1.
    CC-1 Retail — orders — ``files`` on Gold, 0.1200/GB-month, 0.1800 from 16 Oct:
      B1 31 GB, taken 1 Sep, never deleted.
      October: 1–15 → 15.00 GB-months × 0.12 = 1.80; 16–31 → 16.00 × 0.18 = 2.88 → 31.00 GB-months, 4.68.
      September: 31.00 GB-months × 0.12 = 3.72; change +0.96.
    CC-2 Corporate — payroll (other owner) — ``hr-db`` on Silver:
      C1 31 GB, taken 30 Oct: 2 of 31 days → 2.00 GB-months → 0.10. No September.
    Totals: CC-1 11.78 (last month 5.55), CC-2 0.10, company 11.88 (last month 5.55, +6.33).
    """

    retail: CostCenter
    corporate: CostCenter
    orders_db: BackupClient
    files: BackupClient
    hr_db: BackupClient


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Report files go to a folder of the test's own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def silver(db):
    return factories.ProtectionPolicyFactory(name="Silver", price_per_gb_month=Decimal("0.0500"))


@pytest.fixture
def gold(db):
    return factories.ProtectionPolicyFactory(name="Gold", price_per_gb_month=Decimal("0.1200"), rpo_hours=6)


@pytest.fixture
def chargeback_estate(app, other_app, silver, gold) -> ChargebackEstate:
    retail, corporate = app.cost_center, other_app.cost_center
    CostCenter.objects.filter(pk=retail.pk).update(
        code="CC-1", name="Retail", owner_email="retail@example.com"
    )
    CostCenter.objects.filter(pk=corporate.pk).update(code="CC-2", name="Corporate")
    retail.refresh_from_db()
    corporate.refresh_from_db()
    orders_db = factories.BackupClientFactory(application=app, name="orders-db", policy=silver)
    files = factories.BackupClientFactory(application=app, name="files", policy=gold)
    hr_db = factories.BackupClientFactory(application=other_app, name="hr-db", policy=silver)

    backup(orders_db, at(9, 20), 100)
    backup(orders_db, at(10, 16), 62, size_gb=80)
    backup(orders_db, at(10, 1), 31, deleted=at(10, 11))
    job(orders_db, JobKind.RESTORE, at(10, 20, 12))
    job(orders_db, JobKind.RESTORE, at(9, 20, 12))  # September: not this month's
    backup(files, at(9, 1), 31)
    PolicyPrice.objects.create(
        policy=gold, effective_from=at(10, 16).date(), price_per_gb_month=Decimal("0.18")
    )
    backup(hr_db, at(10, 30), 31)
    return ChargebackEstate(retail, corporate, orders_db, files, hr_db)


@dataclass
class ComplianceEstate:
    """October 2026 (31 days), looked at after the month.

    ``daily`` — Silver (RPO 26 h, restore test every 30 days), since 1 Sep: a backup at
      01:00 every day from 30 Sep to 31 Oct except 10 and 11 Oct (two failed jobs instead).
      End of 10 Oct (11 Oct 00:00): newest backup 9 Oct 01:00, 47 h old → missed; 11 Oct
      likewise (71 h); every other day end it is 23 h old → met. 29 of 31 days = 93.5 %.
      Restore tests: passed 1 Oct, FAILED 15 Oct → the last one failed. One open critical alert.
      → not compliant (RPO 93.5 % < 99 %, last restore test failed).
    ``hourly`` — Gold (RPO 6 h), since 1 Sep: a backup every 4 h (00:00, 04:00 … 20:00) from
      30 Sep 20:00 to 31 Oct 20:00, and one at 31 Oct 23:00 that FAILED its restore test (not
      good). Every day end has a backup at most 4 h old: 31 of 31. Last good: 31 Oct 20:00,
      4 h before the month end. Restore test passed 20 Oct, 10 minutes. A critical alert
      opened 5 Oct and resolved 6 Oct, another opened 2 Nov: none open at the month end.
      → compliant.
    ``new`` — Silver, created 20 Oct 00:00, a backup at 01:00 daily from 20 Oct. It is older
      than its RPO from 21 Oct 02:00, so the day ends from 21 Oct (22 Oct 00:00) on are
      measured: 11 days, all met. No restore test yet: not due. → compliant.
    ``paused`` — paused: not measured.
    Overall: 2 of 3 measured clients compliant = 66.7 %.
    """

    daily: BackupClient
    hourly: BackupClient
    new: BackupClient


@pytest.fixture
def compliance_estate(app, other_app, silver, gold) -> ComplianceEstate:
    from catalog.choices import AlertSeverity, ClientStatus, ErrorClass, Verification

    silver.restore_test_interval_days = gold.restore_test_interval_days = 30
    silver.save()
    gold.save()
    daily = factories.BackupClientFactory(application=app, name="daily", policy=silver, created_at=at(9, 1))
    hourly = factories.BackupClientFactory(application=app, name="hourly", policy=gold, created_at=at(9, 1))
    new = factories.BackupClientFactory(
        application=other_app, name="new", policy=silver, created_at=at(10, 20)
    )
    factories.BackupClientFactory(application=app, name="paused", policy=silver, status=ClientStatus.PAUSED,
                                       created_at=at(9, 1))  # fmt: skip

    backup(daily, at(9, 30, 1), 1)
    for day in range(1, 32):
        if day in (10, 11):
            job(
                daily,
                JobKind.BACKUP,
                at(10, day, 1, 10),
                state=JobState.FAILED,
                error_class=ErrorClass.TIMEOUT,
            )
        else:
            backup(daily, at(10, day, 1), 1)
    job(daily, JobKind.BACKUP, at(9, 29, 1, 10), state=JobState.FAILED)  # September's
    job(daily, JobKind.RESTORE_TEST, at(10, 1, 12))
    job(daily, JobKind.RESTORE_TEST, at(10, 15, 12), state=JobState.FAILED,
        error_class=ErrorClass.CHECKSUM_MISMATCH)  # fmt: skip
    factories.AlertFactory(client=daily, severity=AlertSeverity.CRITICAL, created_at=at(10, 11))

    moment = at(9, 30, 20)
    while moment <= at(10, 31, 20):
        backup(hourly, moment, 1)
        moment += timedelta(hours=4)
    backup(hourly, at(10, 31, 23), 1, verification=Verification.FAILED)
    job(hourly, JobKind.RESTORE_TEST, at(10, 20, 12), minutes=10)
    factories.AlertFactory(client=hourly, severity=AlertSeverity.CRITICAL, created_at=at(10, 5),
                           resolved_at=at(10, 6))  # fmt: skip
    factories.AlertFactory(client=hourly, severity=AlertSeverity.CRITICAL, created_at=at(11, 2))

    for day in range(20, 32):
        backup(new, at(10, day, 1), 1)
    return ComplianceEstate(daily, hourly, new)


@dataclass
class OperationsEstate:
    """October 2026, one client ``ops`` on target ``vault`` (1,000 GB).

    Jobs finished in October (20):
      backups (13): 6 scheduled succeeded (one of them is backup B2), 1 started by hand
        succeeded, 2 failed "permission denied" and their 2 automatic retries succeeded,
        1 failed "timeout" and its retry failed "timeout" too → 9 succeeded, 4 failed;
      restore tests (2): 1 passed, 1 failed "lease expired" (a failed job, but no verdict);
      restores (4): 3 succeeded (the restore requests below), 1 cancelled;
      expiries (1): succeeded.
      → 14 succeeded, 5 failed, 1 cancelled; success rate 14 ÷ 19 = 73.68 %.
      Failures by class: permission denied 2, timeout 2, lease expired 1. Retries recovered: 2.
      Plus one failed backup that finished on 30 September: not counted.
    Restore requests completed: submitted 5 Oct 10:00 → restored 10:30 (30 min), 6 Oct 09:00 →
      11:00 (2 h), 7 Oct 08:00 → 09:00 (1 h): median 1 h. One approved by the system, one by
      a person (audit trail): 50 % approved by the system.
    Human actions: 1 job by hand + 1 decision by a person + 1 alert acknowledged = 3;
      3 × 1,000 ÷ 20 jobs = 150.0 per 1,000 jobs.
    Silent agent ``quiet``: silent 10 Oct 00:00–02:00 and from 20 Oct on (open at the month
      end, 12 days) → 2 alerts, 12 d 2 h. A September alert is not counted.
    Storage on ``vault``: B1 100 GB (taken 1 Sep), B3 30 GB (10 Sep, deleted 5 Oct), B2 50 GB
      (10 Oct) → 130 GB held at the end of September, 150 GB at the end of October: +20 GB
      (+15.4 %), 15.0 % full.
    """

    client: BackupClient


@pytest.fixture
def operations_estate(app, owner, silver) -> OperationsEstate:
    from catalog.choices import AlertKind, ErrorClass, JobTrigger
    from catalog.models import Alert, StorageTarget
    from requests_app.choices import ActorKind, Channel, RequestStatus
    from requests_app.models import AuditEvent
    from tests.requests.factories import RestoreRequestFactory

    StorageTarget.objects.filter(pk=silver.storage_target_id).update(name="vault", capacity_bytes=1000 * GB)
    client = factories.BackupClientFactory(application=app, name="ops", policy=silver)
    b1 = backup(client, at(9, 1), 100)
    backup(client, at(9, 10), 30, deleted=at(10, 5))
    backup(client, at(10, 10), 50)  # B2: one of the six scheduled backups that succeeded

    def run(finished, **fields):
        return job(client, JobKind.BACKUP, finished, **fields)

    for day in (2, 4, 6, 8, 12):
        run(at(10, day, 2))
    run(at(10, 3, 9), trigger=JobTrigger.USER)
    for day in (14, 16):
        failed = run(at(10, day, 2), state=JobState.FAILED, error_class=ErrorClass.PERMISSION_DENIED)
        run(at(10, day, 3), trigger=JobTrigger.RETRY, attempt=2, retry_of=failed)
    failed = run(at(10, 18, 2), state=JobState.FAILED, error_class=ErrorClass.TIMEOUT)
    run(at(10, 18, 3), state=JobState.FAILED, error_class=ErrorClass.TIMEOUT, trigger=JobTrigger.RETRY,
        attempt=2, retry_of=failed)  # fmt: skip
    run(at(9, 30, 2), state=JobState.FAILED, error_class=ErrorClass.TIMEOUT)  # September's

    job(client, JobKind.RESTORE_TEST, at(10, 20, 12), backup_=b1, trigger=JobTrigger.SYSTEM)
    job(client, JobKind.RESTORE_TEST, at(10, 21, 12), backup_=b1, state=JobState.FAILED,
        error_class=ErrorClass.LEASE_EXPIRED, trigger=JobTrigger.SYSTEM)  # fmt: skip
    job(client, JobKind.RESTORE, at(10, 22, 12), backup_=b1, state=JobState.CANCELLED)
    job(client, JobKind.EXPIRE, at(10, 5), backup_=b1, trigger=JobTrigger.SYSTEM)

    approvals = [(ActorKind.SYSTEM, None), (ActorKind.USER, owner), (None, None)]
    for (submitted, restored), (actor, user) in zip(
        [(at(10, 5, 10), at(10, 5, 10, 30)), (at(10, 6, 9), at(10, 6, 11)), (at(10, 7, 8), at(10, 7, 9))],
        approvals,
        strict=True,
    ):
        restore = job(client, JobKind.RESTORE, restored, backup_=b1, trigger=JobTrigger.REQUEST)
        request = RestoreRequestFactory(
            backup=b1, status=RequestStatus.COMPLETED, job=restore, created_at=submitted
        )
        if actor is not None:
            AuditEvent.objects.create(
                occurred_at=submitted + timedelta(minutes=1), application=app, restore_request=request,
                actor_kind=actor, actor_user=user, actor_label=user.username if user else "system",
                channel=Channel.SYSTEM if user is None else Channel.ADMIN, action="approved",
                from_status=RequestStatus.SUBMITTED, to_status=RequestStatus.APPROVED,
            )  # fmt: skip

    quiet = factories.AgentFactory(hostname="quiet.example.com", applications=[app])
    for created, resolved in ((at(10, 10), at(10, 10, 2)), (at(10, 20), None), (at(9, 3), at(9, 4))):
        Alert.objects.create(
            kind=AlertKind.AGENT_SILENT, severity="warning", key=f"agent_silent:{created:%m%d}",
            agent=quiet, message="silent", created_at=created, resolved_at=resolved,
        )  # fmt: skip
    factories.AlertFactory(
        client=client, created_at=at(10, 11), acknowledged_at=at(10, 12), acknowledged_by=owner
    )
    return OperationsEstate(client)


@dataclass
class SharedCenterEstate:
    """Cost centre CC-100 holds two applications: Orders (``app``) and Web Shop.

    ``owner`` owns both, so all of CC-100; ``other_owner`` owns Web Shop only (and
    ``other_app`` elsewhere). Each application has one client with an October backup
    (``orders-db`` 10 GB, ``shop-db`` 20 GB), so CC-100's chargeback holds both.
    Generated the way the monthly run does (``delivery.generate``), CSV only:
    ``center_report`` is CC-100's chargeback, ``shop_report`` Web Shop's own.
    """

    center: CostCenter
    web_shop: object
    center_report: object
    shop_report: object


@pytest.fixture
def web_shop(app, owner, other_owner):
    """Web Shop, in Orders' cost centre (renamed CC-100, mailed to online-finance@example.com)."""
    CostCenter.objects.filter(pk=app.cost_center_id).update(
        code="CC-100", name="Online", owner_email="online-finance@example.com"
    )
    app.cost_center.refresh_from_db()
    return factories.ApplicationFactory(
        slug="web-shop", name="Web Shop", cost_center=app.cost_center, owners=[owner, other_owner]
    )


@pytest.fixture
def shared_center(app, web_shop, silver) -> SharedCenterEstate:
    from reports import delivery

    backup(factories.BackupClientFactory(application=app, name="orders-db", policy=silver), at(10, 1), 10)
    backup(factories.BackupClientFactory(application=web_shop, name="shop-db", policy=silver), at(10, 1), 20)
    center_report = delivery.generate(
        "chargeback", OCTOBER, formats=("csv",), cost_center=app.cost_center, now=at(11, 2)
    )["csv"]
    shop_report = delivery.generate(
        "chargeback", OCTOBER, formats=("csv",), application=web_shop, now=at(11, 2)
    )["csv"]
    return SharedCenterEstate(app.cost_center, web_shop, center_report, shop_report)


def api_client(user):
    """The REST API as an integration acting for ``user``, with an API key of its own."""
    from rest_framework.test import APIClient

    from requests_app.models import ApiKey

    _, key = ApiKey.issue(user=user, name=f"{user.username}'s integration")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def fresh_throttle():
    """The API's throttle counters live in the cache, which outlives a test."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
