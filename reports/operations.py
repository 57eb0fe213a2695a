"""Operations: how the service ran — jobs, failures, silent agents, storage, requests and people's work.

Definitions (the report prints them):

- **Jobs run**: jobs of any kind that reached a terminal state in the month, by
  ``finished_at`` (``requests_app.metrics``' definition). **Success rate** =
  succeeded ÷ (succeeded + failed); cancelled jobs are neither.
- **Failures by class**: failed jobs of the month by the class the catalog
  gave their error.
- **Retries that recovered by themselves**: automatic retries that succeeded.
- **Silent agents**: "agent silent" alerts raised in the month; silent time is
  from the alert until it was resolved (or the month end).
- **Storage**: what each target held (stored sizes of the backups not deleted)
  at the month end and at the end of the month before, against its logical capacity.
- **Requests handled**: client and restore requests approved or rejected in the
  month; **approved by the system**: those the approval rules let through with
  no person (from the audit trail).
- **Time to restore**: from a restore request's submission to its restore job's
  end, for requests completed in the month; the median.
- **Human actions per 1,000 jobs**: manual jobs + decisions by a person + alerts
  acknowledged, per 1,000 jobs run (``requests_app.metrics``' definitions, counted
  over the month). Company-wide only.
- **Capacity forecast**: ``catalog.services.capacity``'s projection per target, as of the
  report's generation (docs/capacity.md). Company-wide only: storage is the backup team's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce, Least, TruncDate
from django.utils import timezone

from catalog.choices import AlertKind, BackupStatus, ErrorClass, JobKind, JobState, JobTrigger
from catalog.metrics import restore_test_failed
from catalog.models import Agent, Alert, Backup, BackupClient, Job
from catalog.services import capacity
from reports.base import GB, BuiltReport, percent
from reports.periods import Month
from reports.scope import Scope
from reports.sql import SecondsBetween, moment
from requests_app import metrics
from requests_app.choices import RequestStatus
from requests_app.models import RestoreRequest

TOP_AGENTS = 10
TOP_CLIENTS = 15
ERROR_CLASSES = list(ErrorClass)


@dataclass
class Line:
    """One client's jobs in the month."""

    client_id: int
    client: str
    application_slug: str
    application_name: str
    cost_center_code: str
    jobs_run: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    backups_run: int = 0
    backups_failed: int = 0
    retries_recovered: int = 0
    restore_tests_run: int = 0
    restore_tests_failed: int = 0
    restores_run: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        return percent(self.succeeded, self.succeeded + self.failed)

    @property
    def main_cause(self) -> str:
        if not self.failures:
            return ""
        error_class = max(self.failures, key=lambda ec: (self.failures[ec], ec))
        return ErrorClass(error_class).label


@dataclass
class KindRow:
    label: str
    run: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def success_rate(self) -> float | None:
        return percent(self.succeeded, self.succeeded + self.failed)


@dataclass
class SilentAgent:
    hostname: str
    alerts: int
    silent: timedelta
    open_at_end: bool


@dataclass
class TargetRow:
    name: str
    capacity_bytes: int
    used_bytes: int
    used_before_bytes: int

    @property
    def fill_pct(self) -> float | None:
        return percent(self.used_bytes, self.capacity_bytes)

    @property
    def growth_bytes(self) -> int:
        return self.used_bytes - self.used_before_bytes

    @property
    def growth_pct(self) -> float | None:
        return percent(self.growth_bytes, self.used_before_bytes)

    @property
    def used_gb(self) -> float:
        return self.used_bytes / GB

    @property
    def capacity_gb(self) -> float:
        return self.capacity_bytes / GB


@dataclass
class OperationsReport(BuiltReport):
    kind = "operations"
    title = "Operations"

    lines: list[Line] = field(default_factory=list)
    kinds: list[KindRow] = field(default_factory=list)
    failures_by_class: list[tuple[str, int]] = field(default_factory=list)
    daily: list[tuple[date, int, int]] = field(default_factory=list)
    silent_agents: list[SilentAgent] = field(default_factory=list)
    silent_alerts: int = 0
    alerts_by_kind: list[tuple[str, int, int]] = field(
        default_factory=list
    )  # label, raised, of which critical
    storage: list[TargetRow] = field(default_factory=list)
    restores_completed: int = 0
    median_time_to_restore: timedelta | None = None
    work: metrics.Week | None = None  # company-wide only
    forecasts: list[capacity.Forecast] | None = None  # company-wide only
    capacity_alert_days: int = 0
    capacity_as_of: date | None = None

    @property
    def total(self) -> KindRow:
        row = KindRow("All jobs")
        for kind in self.kinds:
            row.run += kind.run
            row.succeeded += kind.succeeded
            row.failed += kind.failed
            row.cancelled += kind.cancelled
        return row

    @property
    def retries_recovered(self) -> int:
        return sum(line.retries_recovered for line in self.lines)

    @property
    def failures(self) -> int:
        return sum(count for _, count in self.failures_by_class)

    @property
    def top_failing(self) -> list[Line]:
        failing = [line for line in self.lines if line.failed]
        return sorted(failing, key=lambda line: (-line.failed, line.application_name, line.client))[
            :TOP_CLIENTS
        ]

    @property
    def more_failing(self) -> int:
        return max(0, sum(1 for line in self.lines if line.failed) - TOP_CLIENTS)

    @property
    def top_silent_agents(self) -> list[SilentAgent]:
        return self.silent_agents[:TOP_AGENTS]

    @property
    def more_silent_agents(self) -> int:
        return max(0, len(self.silent_agents) - TOP_AGENTS)

    @property
    def requests_handled(self) -> int | None:
        if self.work is None:
            return None
        return self.work.approved_by_system + self.work.decisions_by_person

    @property
    def approved_by_system_pct(self) -> float | None:
        if self.work is None:
            return None
        return percent(
            self.work.approved_by_system, self.work.approved_by_system + self.work.approved_by_person
        )

    CSV_HEADER = [
        "month", "cost_centre", "application", "application_name", "client", "jobs_run", "succeeded",
        "failed", "cancelled", "success_rate_pct", "backup_jobs", "backup_jobs_failed",
        "retries_recovered", "restore_tests", "restore_tests_failed", "restores",
        *(f"failed_{error_class}" for error_class in ErrorClass.values),
    ]  # fmt: skip

    def csv_rows(self):
        for line in self.lines:
            rate = line.success_rate
            yield [
                str(self.month), line.cost_center_code, line.application_slug, line.application_name,
                line.client, line.jobs_run, line.succeeded, line.failed, line.cancelled,
                "" if rate is None else f"{rate:.1f}", line.backups_run, line.backups_failed,
                line.retries_recovered, line.restore_tests_run, line.restore_tests_failed, line.restores_run,
                *(line.failures.get(error_class, 0) for error_class in ErrorClass.values),
            ]  # fmt: skip

    def summary(self) -> dict:
        total = self.total
        return {
            "jobs_run": total.run,
            "success_rate": None if total.success_rate is None else round(total.success_rate, 2),
            "failures": self.failures,
        }


def build(month: Month, scope: Scope, *, now=None) -> OperationsReport:
    as_of = month.as_of(now)
    report = OperationsReport(month=month, scope=scope, as_of=as_of)
    finished = Job.objects.filter(
        scope.q("client__application"),
        state__in=JobState.terminal(),
        finished_at__gte=month.start,
        finished_at__lt=as_of,
    )
    report.lines, report.kinds = _lines_and_kinds(scope, finished)
    report.failures_by_class = _failures_by_class(report.lines)
    report.daily = _daily(finished, month, as_of)
    report.silent_agents = _silent_agents(scope, month, as_of)
    report.silent_alerts = sum(agent.alerts for agent in report.silent_agents)
    report.alerts_by_kind = _alerts_by_kind(scope, month, as_of)
    report.storage = _storage(scope, month, as_of)
    report.restores_completed, report.median_time_to_restore = _time_to_restore(scope, month, as_of)
    if scope.is_company:
        report.work = _work_done(report, month, as_of)
        report.forecasts = capacity.forecast_all(now=now)
        report.capacity_alert_days = settings.PORTAL_CAPACITY_ALERT_DAYS
        report.capacity_as_of = timezone.localdate(now or timezone.now())
    return report


def _lines_and_kinds(scope: Scope, finished) -> tuple[list[Line], list[KindRow]]:
    """Per client and per kind of job, from one grouped pass over the month's finished jobs."""
    failed = Q(state=JobState.FAILED)
    counts = {
        "run": Count("pk"),
        "succeeded": Count("pk", filter=Q(state=JobState.SUCCEEDED)),
        "failed": Count("pk", filter=failed),
        "cancelled": Count("pk", filter=Q(state=JobState.CANCELLED)),
        "retries_recovered": Count("pk", filter=Q(trigger=JobTrigger.RETRY, state=JobState.SUCCEEDED)),
        # A failure whose agent vanished says nothing about the backup: catalog.metrics' rule for tests.
        "restore_tests_failed": Count("pk", filter=restore_test_failed()),
        **{f"class_{ec}": Count("pk", filter=failed & Q(error_class=ec)) for ec in ErrorClass.values},
    }
    rows = finished.order_by().values("client_id", "kind").annotate(**counts)
    kinds = {kind: KindRow(label) for kind, label in JobKind.choices}
    by_client: dict[int, list[dict]] = {}
    for row in rows:
        by_client.setdefault(row["client_id"], []).append(row)
        total = kinds[row["kind"]]
        total.run += row["run"]
        total.succeeded += row["succeeded"]
        total.failed += row["failed"]
        total.cancelled += row["cancelled"]
    clients = (
        BackupClient.objects.filter(scope.q("application"))
        .order_by()
        .values("pk", "name", "application__slug", "application__name", "application__cost_center__code")
    )
    lines = [_line(client, by_client[client["pk"]]) for client in clients if client["pk"] in by_client]
    lines.sort(key=lambda line: (line.cost_center_code, line.application_name, line.client))
    return lines, list(kinds.values())


def _line(client: dict, rows: list[dict]) -> Line:
    line = Line(
        client_id=client["pk"],
        client=client["name"],
        application_slug=client["application__slug"],
        application_name=client["application__name"],
        cost_center_code=client["application__cost_center__code"],
    )
    for row in rows:
        line.jobs_run += row["run"]
        line.succeeded += row["succeeded"]
        line.failed += row["failed"]
        line.cancelled += row["cancelled"]
        line.retries_recovered += row["retries_recovered"]
        if row["kind"] == JobKind.BACKUP:
            line.backups_run += row["run"]
            line.backups_failed += row["failed"]
        elif row["kind"] == JobKind.RESTORE_TEST:
            line.restore_tests_run += row["run"]
            line.restore_tests_failed += row["restore_tests_failed"]
        elif row["kind"] == JobKind.RESTORE:
            line.restores_run += row["run"]
        for error_class in ErrorClass.values:
            if row[f"class_{error_class}"]:
                line.failures[error_class] = line.failures.get(error_class, 0) + row[f"class_{error_class}"]
    return line


def _failures_by_class(lines: list[Line]) -> list[tuple[str, int]]:
    totals = {ec: sum(line.failures.get(ec, 0) for line in lines) for ec in ErrorClass.values}
    labels = dict(ErrorClass.choices)
    return sorted(((labels[ec], n) for ec, n in totals.items() if n), key=lambda item: (-item[1], item[0]))


def _daily(finished, month: Month, as_of: datetime) -> list[tuple[date, int, int]]:
    rows = {
        row["day"]: row
        for row in finished.order_by()
        .annotate(day=TruncDate("finished_at"))
        .values("day")
        .annotate(run=Count("pk"), failed=Count("pk", filter=Q(state=JobState.FAILED)))
    }
    days = []
    for n in range(month.days_in_month):
        day = month.first_day + timedelta(days=n)
        if month.day_start(day) >= as_of:
            break
        row = rows.get(day, {})
        days.append((day, row.get("run", 0), row.get("failed", 0)))
    return days


def _silent_agents(scope: Scope, month: Month, as_of: datetime) -> list[SilentAgent]:
    alerts = Alert.objects.filter(
        kind=AlertKind.AGENT_SILENT, created_at__gte=month.start, created_at__lt=as_of
    )
    if not scope.is_company:
        serving = Agent.applications.through.objects.filter(
            **({"application__cost_center": scope.cost_center} if scope.cost_center else {}),
            **({"application": scope.application} if scope.application else {}),
        )
        alerts = alerts.filter(agent_id__in=serving.values("agent_id"))
    until = Least(Coalesce(F("resolved_at"), moment(as_of)), moment(as_of))
    rows = (
        alerts.order_by()
        .values("agent__hostname")
        .annotate(
            n=Count("pk"),
            seconds=Sum(SecondsBetween(until, F("created_at"))),
            still_open=Count("pk", filter=Q(resolved_at__isnull=True) | Q(resolved_at__gt=as_of)),
        )
    )
    agents = [
        SilentAgent(
            hostname=row["agent__hostname"] or "(unknown agent)",
            alerts=row["n"],
            silent=timedelta(
                seconds=max(0, round(float(row["seconds"] or 0)))
            ),  # whole seconds: julianday() rounds
            open_at_end=bool(row["still_open"]),
        )
        for row in rows
    ]
    return sorted(agents, key=lambda agent: (-agent.silent, agent.hostname))


def _alerts_by_kind(scope: Scope, month: Month, as_of: datetime) -> list[tuple[str, int, int]]:
    alerts = Alert.objects.filter(created_at__gte=month.start, created_at__lt=as_of)
    if not scope.is_company:
        alerts = alerts.filter(scope.q("application"))
    rows = {
        row["kind"]: row
        for row in alerts.order_by()
        .values("kind")
        .annotate(n=Count("pk"), critical=Count("pk", filter=Q(severity="critical")))
    }
    return [
        (label, rows[kind]["n"], rows[kind]["critical"]) for kind, label in AlertKind.choices if kind in rows
    ]


def _storage(scope: Scope, month: Month, as_of: datetime) -> list[TargetRow]:
    """What each target held at the month end and at the previous month end (for a scope: its backups)."""
    before = month.start

    def held_at(moment_: datetime) -> Q:
        return Q(taken_at__lt=moment_) & (Q(deleted_at__isnull=True) | Q(deleted_at__gt=moment_))

    rows = (
        Backup.objects.filter(scope.q("client__application"), taken_at__lt=as_of)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=before))
        .exclude(status=BackupStatus.DELETED, deleted_at__isnull=True)
        .order_by()
        .values("storage_target__name", "storage_target__capacity_bytes")
        .annotate(
            used=Sum("stored_size_bytes", filter=held_at(as_of)),
            used_before=Sum("stored_size_bytes", filter=held_at(before)),
        )
    )
    targets = [
        TargetRow(
            name=row["storage_target__name"],
            capacity_bytes=row["storage_target__capacity_bytes"],
            used_bytes=row["used"] or 0,
            used_before_bytes=row["used_before"] or 0,
        )
        for row in rows
    ]
    return sorted(targets, key=lambda target: target.name)


def _time_to_restore(scope: Scope, month: Month, as_of: datetime) -> tuple[int, timedelta | None]:
    """Completed restore requests of the month and the median time from submission to restored."""
    completed = (
        RestoreRequest.objects.filter(
            scope.q("backup__client__application"),
            status=RequestStatus.COMPLETED,
            job__finished_at__gte=month.start,
            job__finished_at__lt=as_of,
        )
        .annotate(seconds=SecondsBetween(F("job__finished_at"), F("created_at")))
        .order_by("seconds")
    )
    count = completed.count()
    if not count:
        return 0, None
    # The median without loading every row: the middle one or two, by OFFSET.
    middle = list(completed.values_list("seconds", flat=True)[(count - 1) // 2 : count // 2 + 1])
    return count, timedelta(seconds=round(sum(float(s) for s in middle) / len(middle)))


def _work_done(report: OperationsReport, month: Month, as_of: datetime) -> metrics.Week:
    """requests_app.metrics' weekly counts, over the month instead of a week.

    The job counts are the report's own (the same definitions: terminal jobs by
    ``finished_at``), so the big jobs table is read once; the people's work
    comes from requests_app.metrics' own queries, summed over the weeks of the month.
    """
    work = metrics.Week(start=month.first_day)
    work.jobs_run = report.total.run
    work.retries_recovered = report.retries_recovered
    work.restore_tests_run = sum(line.restore_tests_run for line in report.lines)
    work.restore_tests_failed = sum(line.restore_tests_failed for line in report.lines)
    for rows in metrics.people_work_counts(month.start, as_of):
        for row in rows:
            row.pop("week")
            for name, value in row.items():
                setattr(work, name, getattr(work, name) + value)
    return work
