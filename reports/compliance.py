"""Compliance: is every client's data really protected, and is there evidence it can be restored?

Definitions (the report prints them):

- **Good backup**: a backup not deleted at the moment in question and not
  failed by a restore test.
- **RPO met on a day**: at the end of that day (24:00) the newest good backup
  is younger than the policy's RPO, i.e. some good backup was taken within the
  RPO before that moment. A day is measured once the client is older than its
  RPO (a client younger than its RPO cannot have breached it yet); the month in
  progress counts its completed days only.
- **Restore test**: the newest restore test with a verdict (passed, or failed on
  the backup; one whose agent vanished says nothing) finished by the month end;
  the restore time is that job's duration. It is **current** when it passed
  within the policy's restore-test interval plus a day's grace (the same rule as
  the restore-test watch); a client younger than that is *not yet due*.
- **Retention honoured**: no backup deleted in the month before its expiry.
- **Chain whole** (protected): the newest good backup at the month end can be
  restored — ``BackupQuerySet.restorable()``, the catalog's one rule: a full, or
  an incremental whose full and every point between are available and not failed
  verification. Judged on the catalog as it is when the report is built; a point
  removed since the month end (retention) is not judged again.
- **Compliant client** = RPO met on at least 99 % of its measured days AND a
  current passed restore test (or not yet due) AND retention honoured AND its
  chain whole. **Overall compliance** = compliant clients ÷ measured clients
  (active clients).
- **Open critical alerts**: critical alerts raised before the month end and not
  resolved by then (shown, not part of the verdict).

Aggregated in the database: the days met are a window function (``LEAD``) over
each client's backups, summed per client; the last restore test is ``ROW_NUMBER``
over the restore tests; counts are grouped queries; whether the newest good backup is
restorable is a correlated EXISTS on the clients' query, and the members that break the
broken chains are named by one more query (catalog.services.chains.first_breaks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from django.db.models import (
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Q,
    Subquery,
    Value,
    Window,
)
from django.db.models.functions import Ceil, Coalesce, Greatest, Lead, Least, RowNumber

from catalog.choices import (
    AlertSeverity,
    BackupStatus,
    ClientStatus,
    JobKind,
    JobState,
    Verification,
)
from catalog.metrics import restore_test_failed, restore_test_passed
from catalog.models import Alert, Backup, BackupClient, Job, ProtectionPolicy
from catalog.services import chains
from reports.base import BuiltReport, percent
from reports.periods import Month
from reports.scope import Scope
from reports.sql import SecondsBetween, grouped_sum, moment

RPO_DAYS_TARGET = 99.0  # percent of measured days
RESTORE_TEST_GRACE = timedelta(days=1)
#: How many exceptions a summary PDF lists before "and N more — see the CSV".
TOP_EXCEPTIONS = 40
DAY = 86400.0
#: Far beyond any month, for a backup with no successor.
NEVER = 1e12
#: Keeps a backup taken exactly at 24:00 on that day despite float rounding in julianday().
EPSILON = 0.001

PASSED, FAILED, OVERDUE, NEVER_TESTED, NOT_DUE = "passed", "failed", "overdue", "never tested", "not yet due"


@dataclass
class Line:
    """One client's compliance at the month end."""

    client_id: int
    client: str
    hostname: str
    application_slug: str
    application_name: str
    cost_center_code: str
    policy: str
    rpo_hours: int
    test_interval_days: int
    last_good_at: datetime | None
    age: timedelta | None
    days_measured: int
    days_met: int
    failed_backups: int
    last_test_at: datetime | None
    last_test_passed: bool | None
    last_test_duration: timedelta | None
    test_status: str
    deleted_in_month: int
    retention_violations: int
    open_critical_alerts: int
    #: Why the newest good backup cannot be restored ("chain broken: backup 41 failed verification");
    #: empty when it can.
    chain_broken: str = ""
    reasons: list[str] = field(default_factory=list)

    @property
    def rpo_met_at_end(self) -> bool:
        return self.age is not None and self.age < timedelta(hours=self.rpo_hours)

    @property
    def rpo_share(self) -> float | None:
        return percent(self.days_met, self.days_measured)

    @property
    def rpo_ok(self) -> bool:
        share = self.rpo_share
        return share is None or share >= RPO_DAYS_TARGET

    @property
    def test_ok(self) -> bool:
        return self.test_status in (PASSED, NOT_DUE)

    @property
    def retention_ok(self) -> bool:
        return self.retention_violations == 0

    @property
    def chain_ok(self) -> bool:
        return not self.chain_broken

    @property
    def compliant(self) -> bool:
        return self.rpo_ok and self.test_ok and self.retention_ok and self.chain_ok

    @property
    def age_hours(self) -> float | None:
        return self.age.total_seconds() / 3600 if self.age is not None else None


@dataclass(frozen=True)
class Totals:
    """A set of clients against the criteria: the summary, an application's row, the total row."""

    clients: int = 0
    compliant: int = 0
    rpo_ok: int = 0
    tests_ok: int = 0
    retention_ok: int = 0
    chains_ok: int = 0
    days_met: int = 0
    days_measured: int = 0
    failed_backups: int = 0
    retention_violations: int = 0
    open_critical_alerts: int = 0  # about the clients; a report adds those about agents and storage

    @classmethod
    def of(cls, lines: Iterable[Line]) -> Totals:
        """The one place the clients' figures are added up."""
        lines = list(lines)
        return cls(
            clients=len(lines),
            compliant=sum(line.compliant for line in lines),
            rpo_ok=sum(line.rpo_ok for line in lines),
            tests_ok=sum(line.test_ok for line in lines),
            retention_ok=sum(line.retention_ok for line in lines),
            chains_ok=sum(line.chain_ok for line in lines),
            days_met=sum(line.days_met for line in lines),
            days_measured=sum(line.days_measured for line in lines),
            failed_backups=sum(line.failed_backups for line in lines),
            retention_violations=sum(line.retention_violations for line in lines),
            open_critical_alerts=sum(line.open_critical_alerts for line in lines),
        )

    @property
    def exceptions(self) -> int:
        return self.clients - self.compliant

    @property
    def compliance_pct(self) -> float | None:
        return percent(self.compliant, self.clients)

    @property
    def rpo_share(self) -> float | None:
        """The share of all the clients' measured days on which the RPO was met."""
        return percent(self.days_met, self.days_measured)

    @property
    def rpo_missed(self) -> int:
        return self.clients - self.rpo_ok

    @property
    def rpo_pct(self) -> float | None:
        return percent(self.rpo_ok, self.clients)

    @property
    def tests_missed(self) -> int:
        """Clients whose restore test is not current."""
        return self.clients - self.tests_ok

    @property
    def tests_pct(self) -> float | None:
        return percent(self.tests_ok, self.clients)

    @property
    def retention_missed(self) -> int:
        return self.clients - self.retention_ok

    @property
    def retention_pct(self) -> float | None:
        return percent(self.retention_ok, self.clients)

    @property
    def chains_broken(self) -> int:
        return self.clients - self.chains_ok

    @property
    def chains_pct(self) -> float | None:
        return percent(self.chains_ok, self.clients)


@dataclass
class Group:
    """An application's clients and their tally."""

    code: str
    name: str
    cost_center_code: str
    lines: list[Line] = field(default_factory=list)

    @cached_property
    def totals(self) -> Totals:
        return Totals.of(self.lines)

    @property
    def clients(self) -> int:
        return self.totals.clients

    @property
    def compliant(self) -> int:
        return self.totals.compliant

    @property
    def compliance_pct(self) -> float | None:
        return self.totals.compliance_pct

    @property
    def rpo_share(self) -> float | None:
        return self.totals.rpo_share

    @property
    def failed_backups(self) -> int:
        return self.totals.failed_backups

    @property
    def tests_not_current(self) -> int:
        return self.totals.tests_missed

    @property
    def retention_violations(self) -> int:
        return self.totals.retention_violations

    @property
    def open_critical_alerts(self) -> int:
        return self.totals.open_critical_alerts


@dataclass
class ComplianceReport(BuiltReport):
    kind = "compliance"
    title = "Compliance"

    lines: list[Line] = field(default_factory=list)
    applications: list[Group] = field(default_factory=list)
    not_measured: int = 0  # paused or waiting for enrolment at the month end
    other_critical_alerts: int = 0  # open critical alerts about agents and storage, not clients
    deleted_in_month: int = 0

    @cached_property
    def totals(self) -> Totals:
        """Every measured client's figures added up (once: read after ``build`` has made the lines)."""
        return Totals.of(self.lines)

    @property
    def clients(self) -> int:
        return self.totals.clients

    @property
    def compliant(self) -> int:
        return self.totals.compliant

    @property
    def compliance_pct(self) -> float | None:
        return self.totals.compliance_pct

    @property
    def exceptions(self) -> list[Line]:
        """Non-compliant clients, the worst first: lowest RPO share, then a failed or missing test."""
        return sorted(
            (line for line in self.lines if not line.compliant),
            key=lambda line: (
                line.rpo_share if line.rpo_share is not None else 100.0,
                line.test_ok,
                line.application_name,
                line.client,
            ),
        )

    @property
    def top_exceptions(self) -> list[Line]:
        return self.exceptions[:TOP_EXCEPTIONS]

    @property
    def more_exceptions(self) -> int:
        return max(0, len(self.exceptions) - TOP_EXCEPTIONS)

    @property
    def rpo_ok(self) -> int:
        return self.totals.rpo_ok

    @property
    def tests_ok(self) -> int:
        return self.totals.tests_ok

    @property
    def retention_violations(self) -> int:
        return self.totals.retention_violations

    @property
    def open_critical_alerts(self) -> int:
        """About clients and about agents and storage."""
        return self.totals.open_critical_alerts + self.other_critical_alerts

    @property
    def days_in_period(self) -> int:
        return _days_elapsed(self.month, self.as_of)

    CSV_HEADER = [
        "month", "cost_centre", "application", "application_name", "client", "hostname", "policy",
        "rpo_hours", "last_good_backup_at", "age_hours_at_month_end", "rpo_met_at_month_end",
        "days_measured", "days_rpo_met", "rpo_met_pct", "failed_backup_jobs", "last_restore_test_at",
        "last_restore_test_result", "restore_time_seconds", "restore_test_status",
        "restore_test_interval_days", "backups_deleted", "deleted_before_expiry", "open_critical_alerts",
        "compliant", "reasons", "chain_whole",
    ]  # fmt: skip

    def csv_rows(self):
        for line in self.lines:
            yield [
                str(self.month), line.cost_center_code, line.application_slug, line.application_name,
                line.client, line.hostname, line.policy, line.rpo_hours, _iso(line.last_good_at),
                _fixed(line.age_hours, 1), _yes(line.rpo_met_at_end), line.days_measured, line.days_met,
                _fixed(line.rpo_share, 1), line.failed_backups, _iso(line.last_test_at),
                "" if line.last_test_passed is None else (PASSED if line.last_test_passed else FAILED),
                "" if line.last_test_duration is None else int(line.last_test_duration.total_seconds()),
                line.test_status, line.test_interval_days, line.deleted_in_month, line.retention_violations,
                line.open_critical_alerts, _yes(line.compliant), "; ".join(line.reasons), _yes(line.chain_ok),
            ]  # fmt: skip

    def summary(self) -> dict:
        return {
            "clients": self.clients,
            "compliant": self.compliant,
            "compliance_pct": None if self.compliance_pct is None else round(self.compliance_pct, 1),
            "exceptions": len(self.exceptions),
        }


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _fixed(value: float | None, places: int) -> str:
    return "" if value is None else f"{value:.{places}f}"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _days_elapsed(month: Month, as_of: datetime) -> int:
    """Completed days of the month by ``as_of`` (all of them once it is over)."""
    return min(month.days_in_month, int((as_of - month.start).total_seconds() // DAY))


def build(month: Month, scope: Scope, *, now=None) -> ComplianceReport:
    as_of = month.as_of(now)
    report = ComplianceReport(month=month, scope=scope, as_of=as_of)
    clients = _clients(scope, month, as_of)
    breaks = _chain_breaks(clients)
    days_met = _days_met(scope, month, as_of)
    tests = _last_tests(scope, as_of)
    failed = _failed_backups(scope, month, as_of)
    deletions = _deletions(scope, month, as_of)
    alerts = _open_critical_alerts(scope, as_of)
    report.other_critical_alerts = alerts.pop(None, 0)
    report.not_measured = _not_measured(scope, as_of)
    report.deleted_in_month = sum(deleted for deleted, _ in deletions.values())

    groups: dict[tuple[str, str], Group] = {}
    for client in clients:
        client["days_met"] = days_met.get(client["pk"], 0)
        client["chain_broken"] = breaks.get(client["pk"], "")
        line = _line(client, tests.get(client["pk"]), failed, deletions, alerts, month, as_of)
        report.lines.append(line)
        key = (line.application_name, line.application_slug)
        if key not in groups:
            groups[key] = Group(line.application_slug, line.application_name, line.cost_center_code)
        groups[key].lines.append(line)
    report.lines.sort(key=lambda line: (line.application_name, line.client))
    report.applications = [groups[key] for key in sorted(groups)]
    for group in report.applications:
        group.lines.sort(key=lambda line: line.client)
    return report


def _measured_clients(scope: Scope, as_of: datetime):
    return BackupClient.objects.filter(
        scope.q("application"), status=ClientStatus.ACTIVE, created_at__lt=as_of
    )


def _not_measured(scope: Scope, as_of: datetime) -> int:
    return (
        BackupClient.objects.filter(scope.q("application"), created_at__lt=as_of)
        .filter(status__in=(ClientStatus.PAUSED, ClientStatus.PENDING_ENROLMENT))
        .count()
    )


def _good_backups(as_of: datetime):
    return (
        Backup.objects.filter(client=OuterRef("pk"), taken_at__lt=as_of)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=as_of))
        .exclude(verification=Verification.FAILED)
    )


def _clients(scope: Scope, month: Month, as_of: datetime) -> list[dict]:
    newest = _good_backups(as_of).order_by("-taken_at", "-pk")
    rows = (
        _measured_clients(scope, as_of)
        .annotate(
            last_good_at=Subquery(newest.values("taken_at")[:1]),
            last_good_id=Subquery(newest.values("pk")[:1]),
            last_good_full_id=Subquery(newest.values("full_id")[:1]),
        )
        .annotate(
            # The catalog's rule, asked about the point as it is now; one still available that
            # the rule refuses has a broken chain (one removed since the month end is not judged).
            last_good_restorable=Exists(Backup.objects.restorable().filter(pk=OuterRef("last_good_id"))),
            last_good_held=Exists(
                Backup.objects.filter(pk=OuterRef("last_good_id"), status=BackupStatus.AVAILABLE)
            ),
        )
        .order_by()
        .values(
            "pk", "name", "hostname", "created_at", "last_good_at", "last_good_id", "last_good_full_id",
            "last_good_restorable", "last_good_held",
            "policy__name", "policy__rpo_hours", "policy__restore_test_interval_days",
            "application__slug", "application__name", "application__cost_center__code",
        )
    )  # fmt: skip
    return list(rows)


def _chain_breaks(clients: list[dict]) -> dict[int, str]:
    """Per client whose newest good backup is held but not restorable: why (the member that breaks it)."""
    points = {
        client["pk"]: chains.Point(
            client["last_good_id"], client["last_good_full_id"], client["last_good_at"]
        )
        for client in clients
        if client["last_good_held"] and not client["last_good_restorable"]
    }
    if not points:
        return {}
    breaks = chains.first_breaks(points.values())
    unknown = "chain broken"  # the rule refused it, yet no member was found: say so, not more
    return {
        client_id: breaks[point.pk].reason if point.pk in breaks else unknown
        for client_id, point in points.items()
    }


def _days_met(scope: Scope, month: Month, as_of: datetime) -> dict[int, int]:
    """Per client: the measured days of the month whose end had a good backup younger than the RPO.

    Each good backup covers [taken_at, min(taken_at + RPO, next backup, deletion)):
    the stretch in which it is the newest and still young enough. The covers do not
    overlap, so the days met are the sum, over backups, of the day ends
    (k × 24 h after the month start, k = 1…days) inside each cover. One pass over
    the month's backups in time order (``backup_taken_idx``), ``LEAD`` per client.
    """
    start = moment(month.start)
    days = _days_elapsed(month, as_of)
    longest_rpo = max(ProtectionPolicy.objects.values_list("rpo_hours", flat=True), default=0)
    rpo = ExpressionWrapper(F("client__policy__rpo_hours") * Value(3600.0), output_field=FloatField())
    newer = Window(Lead("taken_at"), partition_by=[F("client_id")], order_by=F("taken_at").asc())
    since = SecondsBetween(F("taken_at"), start)
    until = Least(
        since + rpo,
        Coalesce(SecondsBetween(newer, start), Value(NEVER)),
        Coalesce(SecondsBetween(F("deleted_at"), start), Value(NEVER)),
        output_field=FloatField(),
    )
    # The first day end at which the client is older than its RPO.
    measured_from = Ceil(
        (SecondsBetween(F("client__created_at"), start) + rpo - Value(EPSILON)) / Value(DAY),
        output_field=FloatField(),
    )
    first = Greatest(Ceil((since - Value(EPSILON)) / Value(DAY)), measured_from, Value(1.0))
    last = Least(Ceil((until - Value(EPSILON)) / Value(DAY)) - Value(1.0), Value(float(days)))
    window_start = month.start - timedelta(hours=longest_rpo)
    covered = (
        Backup.objects.filter(
            scope.q("client__application"),
            client__status=ClientStatus.ACTIVE,
            taken_at__gte=window_start,
            taken_at__lt=as_of,
        )
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=window_start))
        .exclude(verification=Verification.FAILED)
        .annotate(days=Greatest(last - first + Value(1.0), Value(0.0), output_field=FloatField()))
    )
    return {
        client_id: int(round(total)) for client_id, total in grouped_sum(covered, "client_id", "days").items()
    }


def _last_tests(scope: Scope, as_of: datetime) -> dict[int, dict]:
    """Per client, the newest restore test with a verdict finished by ``as_of``.

    One pass over the restore tests (few next to the backups) with ROW_NUMBER per
    client: a per-client "newest first" probe would walk every job of a client
    never tested.
    """
    tests = (
        Job.objects.filter(
            scope.q("client__application"),
            restore_test_passed() | restore_test_failed(),  # a verdict: not a test whose agent went away
            finished_at__lt=as_of,
        )
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("client_id")], order_by=[F("finished_at").desc(), F("pk").desc()]
            )
        )
        .filter(rank=1)
        .order_by()
    )
    return {row["client_id"]: row for row in tests.values("client_id", "state", "started_at", "finished_at")}


def _failed_backups(scope: Scope, month: Month, as_of: datetime) -> dict[int, int]:
    rows = (
        Job.objects.filter(
            scope.q("client__application"), kind=JobKind.BACKUP, state=JobState.FAILED,
            finished_at__gte=month.start, finished_at__lt=as_of,
        )
        .order_by()
        .values("client_id")
        .annotate(n=Count("pk"))
    )  # fmt: skip
    return {row["client_id"]: row["n"] for row in rows}


def _deletions(scope: Scope, month: Month, as_of: datetime) -> dict[int, tuple[int, int]]:
    """Per client: (backups deleted in the month, of which before their expiry)."""
    rows = (
        Backup.objects.filter(
            scope.q("client__application"), deleted_at__gte=month.start, deleted_at__lt=as_of
        )
        .order_by()
        .values("client_id")
        .annotate(n=Count("pk"), early=Count("pk", filter=Q(deleted_at__lt=F("expires_at"))))
    )
    return {row["client_id"]: (row["n"], row["early"]) for row in rows}


def _open_critical_alerts(scope: Scope, as_of: datetime) -> dict[int | None, int]:
    """Per client (None: alerts about agents and storage), critical alerts open at ``as_of``."""
    alerts = Alert.objects.filter(severity=AlertSeverity.CRITICAL, created_at__lt=as_of).filter(
        Q(resolved_at__isnull=True) | Q(resolved_at__gt=as_of)
    )
    if not scope.is_company:
        alerts = alerts.filter(scope.q("client__application"))
    rows = alerts.order_by().values("client_id").annotate(n=Count("pk"))
    return {row["client_id"]: row["n"] for row in rows}


def _line(client, test, failed, deletions, alerts, month: Month, as_of: datetime) -> Line:
    rpo_hours = client["policy__rpo_hours"]
    interval = client["policy__restore_test_interval_days"]
    measured_from = client["created_at"] + timedelta(hours=rpo_hours)
    days = _days_elapsed(month, as_of)
    first_measured = max(1, -int(-((measured_from - month.start).total_seconds() - EPSILON) // DAY))
    deleted, early = deletions.get(client["pk"], (0, 0))
    line = Line(
        client_id=client["pk"],
        client=client["name"],
        hostname=client["hostname"],
        application_slug=client["application__slug"],
        application_name=client["application__name"],
        cost_center_code=client["application__cost_center__code"],
        policy=client["policy__name"],
        rpo_hours=rpo_hours,
        test_interval_days=interval,
        last_good_at=client["last_good_at"],
        age=as_of - client["last_good_at"] if client["last_good_at"] else None,
        days_measured=max(0, days - first_measured + 1),
        days_met=client["days_met"],
        failed_backups=failed.get(client["pk"], 0),
        last_test_at=test["finished_at"] if test else None,
        last_test_passed=None if test is None else test["state"] == JobState.SUCCEEDED,
        last_test_duration=(test["finished_at"] - test["started_at"])
        if test and test["started_at"]
        else None,
        test_status=_test_status(test, interval, client["created_at"], as_of),
        deleted_in_month=deleted,
        retention_violations=early,
        open_critical_alerts=alerts.get(client["pk"], 0),
        chain_broken=client["chain_broken"],
    )
    line.reasons = _reasons(line)
    return line


def _test_status(test: dict | None, interval_days: int, created_at: datetime, as_of: datetime) -> str:
    due_since = as_of - timedelta(days=interval_days) - RESTORE_TEST_GRACE
    if test is None:
        return NOT_DUE if created_at >= due_since else NEVER_TESTED
    if test["state"] != JobState.SUCCEEDED:
        return FAILED
    return PASSED if test["finished_at"] >= due_since else OVERDUE


def _reasons(line: Line) -> list[str]:
    reasons = []
    if not line.rpo_ok:
        reasons.append(f"RPO met on {line.days_met} of {line.days_measured} days")
    if line.test_status == FAILED:
        reasons.append(f"last restore test failed ({line.last_test_at:%-d %b})")
    elif line.test_status == OVERDUE:
        reasons.append(f"restore test overdue (passed {line.last_test_at:%-d %b})")
    elif line.test_status == NEVER_TESTED:
        reasons.append("never restore-tested")
    if line.retention_violations:
        reasons.append(f"{line.retention_violations} deleted before expiry")
    if line.chain_broken:
        reasons.append(line.chain_broken)
    return reasons
