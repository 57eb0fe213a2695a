"""Compliance and chargeback with incremental backups: a client is protected only if its newest good
backup can be restored (its chain whole), and each point is billed for what it stores.

The estate: ``weekly``, on a policy with a 48 h RPO and a full every 7 backups, backed up at 01:00
every day of October 2026 — fulls on 1, 8, 15, 22 and 29 October, incrementals between, each on the
day before — restore-tested on 20 October. Every criterion but the chain is met whatever one backup
does (48 h covers a missing day), so the chain alone decides.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.choices import BackupLevel, BackupStatus, JobKind, Verification
from catalog.models import Backup
from reports import builders, render
from tests import factories
from tests.reports.builders import GB, OCTOBER, at, backup, job

pytestmark = pytest.mark.django_db

NOW = at(11, 2)
FULL_DAYS = (1, 8, 15, 22, 29)


def october_chains(client, *, full_gb: float = 10, incremental_gb: float = 1) -> dict[int, Backup]:
    """A backup every day of October at 01:00, by day: fulls on FULL_DAYS, incrementals between."""
    points: dict[int, Backup] = {}
    for day in range(1, 32):
        if day in FULL_DAYS:
            points[day] = backup(client, at(10, day, 1), full_gb)
        else:
            base = points[day - 1]
            points[day] = backup(
                client, at(10, day, 1), incremental_gb, size_gb=incremental_gb,
                level=BackupLevel.INCREMENTAL, base=base, full=base.full or base,
            )  # fmt: skip
    return points


@pytest.fixture
def weekly_policy(db):
    return factories.ProtectionPolicyFactory(
        name="Weekly", rpo_hours=48, restore_test_interval_days=30, full_every_backups=7
    )


def protected_client(app, policy, name: str = "weekly"):
    client = factories.BackupClientFactory(application=app, name=name, policy=policy, created_at=at(9, 1))
    points = october_chains(client)
    job(client, JobKind.RESTORE_TEST, at(10, 20, 12), backup_=points[15])
    return client, points


def fail_verification(point: Backup) -> None:
    Backup.objects.filter(pk=point.pk).update(verification=Verification.FAILED)


def line_of(report, name: str = "weekly"):
    return {line.client: line for line in report.lines}[name]


def test_a_client_whose_chains_are_whole_is_protected(app, weekly_policy):
    protected_client(app, weekly_policy)

    report = builders.build("compliance", OCTOBER, now=NOW)

    line = line_of(report)
    assert line.chain_ok and line.chain_broken == ""
    assert line.compliant and line.reasons == []
    assert report.totals.chains_ok == 1


def test_a_full_that_failed_verification_leaves_its_later_incrementals_unprotected(app, weekly_policy):
    _, points = protected_client(app, weekly_policy)
    fail_verification(points[29])  # the full of the last chain (29, 30, 31 October)

    report = builders.build("compliance", OCTOBER, now=NOW)

    line = line_of(report)
    # The newest good backup is still the 31 October incremental (good on its own)...
    assert line.last_good_at == at(10, 31, 1)
    assert line.rpo_ok and line.test_ok and line.retention_ok
    # ... but it cannot be restored without its full.
    assert not line.chain_ok
    assert line.chain_broken == f"chain broken: backup {points[29].pk} failed verification"
    assert not line.compliant
    assert report.exceptions == [line]
    assert line.reasons == [f"chain broken: backup {points[29].pk} failed verification"]
    assert report.totals.chains_broken == 1


def test_an_incremental_between_that_failed_breaks_the_chain_after_it(app, weekly_policy):
    _, points = protected_client(app, weekly_policy)
    fail_verification(points[30])

    line = line_of(builders.build("compliance", OCTOBER, now=NOW))

    assert line.chain_broken == f"chain broken: backup {points[30].pk} failed verification"


def test_an_older_broken_chain_does_not_matter_when_the_newest_is_whole(app, weekly_policy):
    _, points = protected_client(app, weekly_policy)
    fail_verification(points[22])

    line = line_of(builders.build("compliance", OCTOBER, now=NOW))

    assert line.chain_ok and line.compliant


def test_the_newest_point_failing_itself_leaves_the_one_before_as_newest_good(app, weekly_policy):
    _, points = protected_client(app, weekly_policy)
    fail_verification(points[31])

    line = line_of(builders.build("compliance", OCTOBER, now=NOW))

    assert line.last_good_at == at(10, 30, 1)
    assert line.chain_ok and line.compliant


def test_a_point_retention_removed_since_the_month_end_is_not_judged_again(app, weekly_policy):
    _, points = protected_client(app, weekly_policy)
    fail_verification(points[29])
    # Expired after the month end: the catalog's rule speaks of points as they are now.
    Backup.objects.filter(pk=points[31].pk).update(status=BackupStatus.EXPIRED)

    line = line_of(builders.build("compliance", OCTOBER, now=NOW))

    assert line.last_good_at == at(10, 31, 1)
    assert line.chain_ok


def test_the_pdf_and_the_csv_say_why(app, weekly_policy):
    _, points = protected_client(app, weekly_policy)
    fail_verification(points[29])
    report = builders.build("compliance", OCTOBER, now=NOW)

    html = render.html(report, detail="clients")
    rows = list(csv.DictReader(io.StringIO(render.csv(report))))

    assert f"chain broken: backup {points[29].pk} failed verification" in html
    assert "Newest good backup restorable (its chain whole)" in html
    assert "Compliant (all four)" in html
    assert rows[0]["chain_whole"] == "no"
    assert rows[0]["reasons"] == f"chain broken: backup {points[29].pk} failed verification"


def test_compliance_queries_do_not_grow_with_broken_chains(app, other_app, weekly_policy):
    def broken_clients(application, n: int) -> None:
        for i in range(n):
            _, points = protected_client(application, weekly_policy, name=f"{application.slug}-{i}")
            fail_verification(points[29])

    broken_clients(app, 1)
    with CaptureQueriesContext(connection) as few:
        builders.build("compliance", OCTOBER, now=NOW)
    broken_clients(other_app, 4)
    with CaptureQueriesContext(connection) as many:
        report = builders.build("compliance", OCTOBER, now=NOW)

    assert report.totals.chains_broken == 5
    assert len(many) == len(few)


# --- Chargeback: each point billed for what it stores -----------------------------------------------


def test_chargeback_bills_what_each_point_stores_and_splits_out_the_incrementals(app, weekly_policy):
    client = factories.BackupClientFactory(application=app, name="weekly", policy=weekly_policy)
    october_chains(client, full_gb=10, incremental_gb=1)

    report = builders.build("chargeback", OCTOBER, now=NOW)

    (line,) = report.lines
    # Held from 01:00 of their day to the month end: Σ stored × (31 − day + 23/24) / 31.
    full = sum(10 * (31 - day + 23 / 24) for day in FULL_DAYS) / 31
    incremental = sum(1 * (31 - day + 23 / 24) for day in range(1, 32) if day not in FULL_DAYS) / 31
    assert float(line.gb_months) == pytest.approx(full + incremental, abs=0.01)
    assert float(line.incremental_gb_months) == pytest.approx(incremental, abs=0.01)
    assert report.totals.incremental_gb_months == line.incremental_gb_months
    # Protected size: the newest full's front-end size, not what the last incremental read.
    assert line.protected_bytes == 10 * GB
    assert line.backups == 31


def test_chargeback_csv_and_pdf_show_the_incremental_share(app, weekly_policy):
    client = factories.BackupClientFactory(application=app, name="weekly", policy=weekly_policy)
    october_chains(client)
    report = builders.build("chargeback", OCTOBER, now=NOW)

    rows = list(csv.DictReader(io.StringIO(render.csv(report))))
    html = render.html(report, detail="clients")

    assert rows[0]["incremental_gb_months"] == str(report.lines[0].incremental_gb_months)
    assert f"incr. {report.lines[0].incremental_gb_months:,.2f}" in html


def test_chargeback_of_fulls_only_has_no_incremental_share(chargeback_estate):
    report = builders.build("chargeback", OCTOBER, now=at(11, 26))

    assert report.totals.incremental_gb_months == 0
    assert '<span class="sub">incr.' not in render.html(report, detail="clients")
