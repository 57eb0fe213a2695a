"""Fixtures that build the hand-computed estates of the report tests.

The figures they yield are worked out in the docstrings of the estate classes in
builders.py, which also holds the helpers (``at``, ``backup``, ``job`` ...) they use.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from catalog.choices import JobKind, JobState
from catalog.models import CostCenter
from reports.models import PolicyPrice
from tests import factories
from tests.reports.builders import (
    GB,
    OCTOBER,
    ChargebackEstate,
    ComplianceEstate,
    OperationsEstate,
    SharedCenterEstate,
    at,
    backup,
    job,
)


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
