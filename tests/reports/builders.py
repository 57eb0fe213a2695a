"""Data builders for the report tests: hand-computed estates, small report rows, an API caller.

Every figure the tests assert is worked out in the docstrings of the estate classes here,
from clean boundaries (midnights, whole gigabytes), so a reader can check them on paper;
the fixtures in conftest.py build them. 1 GB = 10^9 bytes.

A plain module, not a conftest: test modules import from here. (Not to be confused with
the ``reports.builders`` module under test.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.files.base import ContentFile

from catalog.choices import BackupStatus, JobKind, JobState
from catalog.models import Backup, BackupClient, CostCenter, Job
from reports.models import Report
from reports.periods import Month
from reports.scope import Scope
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


def make_report(
    kind="chargeback", *, cost_center=None, application=None, fmt="pdf", month=OCTOBER, covers=None
):
    """A Report row with a small file; it covers ``covers`` (ids), by default its scope's applications now."""
    report = Report(
        kind=kind, month=month.first_day, cost_center=cost_center, application=application, format=fmt
    )
    report.file.save(
        f"{kind}-{month}-{fmt}.{fmt}", ContentFile(b"%PDF-1.7 test" if fmt == "pdf" else b"a,b\r\n")
    )
    report.size_bytes = report.file.size
    report.save()
    if covers is None:
        covers = Scope(cost_center=cost_center, application=application).application_ids()
    report.applications.set(covers)
    return report


def listed(response) -> set[int]:
    """The ids of the reports a Reports page response lists."""
    return {row["report"].pk for row in response.context["groups"]}


def api_client(user):
    """The REST API as an integration acting for ``user``, with an API key of its own."""
    from tests.helpers import key_client

    return key_client(user, name=f"{user.username}'s integration")


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
