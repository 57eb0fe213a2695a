"""Work-done metrics: how much the machine did, and how much was left for people, week by week.

The number the product is meant to drive down is **human actions per 1,000
jobs run**. Everything is counted in SQL, grouped by ISO week (Monday 00:00 in
``TIME_ZONE``), in five queries whatever the number of rows.

Definitions (each counted in the week of the timestamp named):

- **jobs run**: jobs of any kind that reached a terminal state (succeeded,
  failed or cancelled), by ``finished_at``.
- **human actions**, the sum of:
    - *manual jobs*: jobs a person started by hand ("Back up now", a manual
      retry): ``trigger = user``, by ``created_at``;
    - *decisions by a person*: client and restore requests approved or
      rejected by a person, in the admin, the portal or through an
      integration's API key (``decided_by`` is set; the audit event's actor is
      not the system), by the audit event's ``occurred_at``;
    - *alerts acknowledged*, by ``acknowledged_at``.
  Not counted: submitting a request (that is the customer asking, not the
  backup team working), cancelling one, setting a legal hold.
- **approved by the system**: requests the approval rules let through with no
  person (``needs_approval`` false; the "approved" audit event's actor is the
  system), by that event's ``occurred_at``; **approved by a person** likewise.
- **retries that recovered by themselves**: automatic retries
  (``trigger = retry``) that succeeded, by ``finished_at``.
- **restore tests run**: ``restore_test`` jobs that reached a terminal state;
  **failed**: those that failed with a verdict on the backup. A test whose
  agent vanished (lease expired) is run but not failed: it says nothing about
  the backup, and the catalog raises no alert for it either.
- **human actions per 1,000 jobs** = human actions × 1000 / jobs run, for the
  same week; none when no job ran.
- **portal CPU seconds per 1,000 jobs** = the CPU time the portal's web
  processes and task workers used that week × 1000 / jobs run: all of the
  portal's work (agents' polls and reports, pages, the API, every task), as
  ``core.usage`` meters it by hour; none when nothing was metered or no job ran.
- **database commits per 1,000 jobs** = transactions committed in the portal's
  database that week (PostgreSQL's ``pg_stat_database.xact_commit``, sampled
  every 5 minutes by ``core.usage``) × 1000 / jobs run; none on SQLite, which
  has no such counter, when nothing was sampled, or when no job ran.

The counts of catalog rows are catalog.metrics'; the decisions are counted
here, from the requests' audit trail.

Dashboards read the last *full* week as the headline (the current week is
still filling up) and compare it with the week before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from catalog import metrics as catalog_metrics
from core import usage
from requests_app.choices import ActorKind, RequestStatus
from requests_app.models import AuditEvent

DEFAULT_WEEKS = 8


@dataclass
class Week:
    """The counts of one ISO week (``start`` is its Monday)."""

    start: date
    in_progress: bool = False
    jobs_run: int = 0
    manual_jobs: int = 0
    approved_by_system: int = 0
    approved_by_person: int = 0
    rejected_by_person: int = 0
    alerts_acknowledged: int = 0
    retries_recovered: int = 0
    restore_tests_run: int = 0
    restore_tests_failed: int = 0
    #: The portal's own cost (core.usage); None when the week has no such figure.
    portal_cpu_seconds: float | None = None
    database_commits: int | None = None

    @property
    def end(self) -> date:
        return self.start + timedelta(days=6)

    @property
    def decisions_by_person(self) -> int:
        return self.approved_by_person + self.rejected_by_person

    @property
    def human_actions(self) -> int:
        return self.manual_jobs + self.decisions_by_person + self.alerts_acknowledged

    @property
    def per_thousand_jobs(self) -> float | None:
        if not self.jobs_run:
            return None
        return self.human_actions * 1000 / self.jobs_run

    @property
    def cpu_seconds_per_thousand_jobs(self) -> float | None:
        if not self.jobs_run or self.portal_cpu_seconds is None:
            return None
        return float(self.portal_cpu_seconds) * 1000 / self.jobs_run

    @property
    def commits_per_thousand_jobs(self) -> float | None:
        if not self.jobs_run or self.database_commits is None:
            return None
        return int(self.database_commits) * 1000 / self.jobs_run


@dataclass
class Automation:
    """Weeks oldest first; the last one is the week in progress."""

    weeks: list[Week] = field(default_factory=list)
    #: False where the database keeps no commit counter (SQLite): the commits say "not measured".
    commits_measured: bool = True

    @property
    def last_full_week(self) -> Week | None:
        full = [week for week in self.weeks if not week.in_progress]
        return full[-1] if full else None

    @property
    def week_before(self) -> Week | None:
        full = [week for week in self.weeks if not week.in_progress]
        return full[-2] if len(full) > 1 else None

    @property
    def trend(self) -> float | None:
        """Change of human actions per 1,000 jobs from the week before to the last full week."""
        last, before = self.last_full_week, self.week_before
        if not last or not before or last.per_thousand_jobs is None or before.per_thousand_jobs is None:
            return None
        return last.per_thousand_jobs - before.per_thousand_jobs

    @property
    def newest_first(self) -> list[Week]:
        return self.weeks[::-1]


def week_start(moment: datetime) -> date:
    day = timezone.localdate(moment)
    return day - timedelta(days=day.weekday())


def weekly(*, weeks: int = DEFAULT_WEEKS, now: datetime | None = None) -> Automation:
    """The last ``weeks`` ISO weeks, the current one included (flagged ``in_progress``)."""
    now = now or timezone.now()
    current = week_start(now)
    first = current - timedelta(weeks=weeks - 1)
    since = timezone.make_aware(datetime.combine(first, time.min))
    until = timezone.make_aware(datetime.combine(current + timedelta(weeks=1), time.min))
    by_week = {first + timedelta(weeks=n): Week(first + timedelta(weeks=n)) for n in range(weeks)}
    by_week[current].in_progress = True

    for rows in (
        catalog_metrics.job_counts(since, until),
        *people_work_counts(since, until),
        usage.weekly_usage(since, until),
    ):
        for row in rows:
            week = by_week.get(_monday(row.pop("week")))
            for name, value in row.items():
                setattr(week, name, value)
    return Automation(weeks=list(by_week.values()), commits_measured=usage.commits_measured())


def _monday(value: datetime | date) -> date:
    """TruncWeek's value as a date: an aware datetime (PostgreSQL, SQLite with USE_TZ) or a date."""
    if isinstance(value, datetime):
        return timezone.localdate(value) if timezone.is_aware(value) else value.date()
    return value


def people_work_counts(since: datetime, until: datetime) -> tuple[QuerySet, QuerySet, QuerySet]:
    """What was left for people, by week: manual jobs, decisions (with the system's), acknowledgements."""
    return (
        catalog_metrics.manual_job_counts(since, until),
        decision_counts(since, until),
        catalog_metrics.acknowledgement_counts(since, until),
    )


def decision_counts(since: datetime, until: datetime) -> QuerySet:
    """Client and restore requests approved or rejected, by a person or by the system, by the event's time."""
    # The audit trail, not the requests' decided_by: a request decided and then
    # cancelled still counts, and the event says who decided, person or system.
    decisions = AuditEvent.objects.filter(
        from_status=RequestStatus.SUBMITTED, to_status__in=(RequestStatus.APPROVED, RequestStatus.REJECTED)
    )
    by_system = Q(actor_kind=ActorKind.SYSTEM)
    return catalog_metrics.by_week(
        decisions,
        "occurred_at",
        since,
        until,
        approved_by_system=Count("pk", filter=by_system & Q(to_status=RequestStatus.APPROVED)),
        approved_by_person=Count("pk", filter=~by_system & Q(to_status=RequestStatus.APPROVED)),
        rejected_by_person=Count("pk", filter=~by_system & Q(to_status=RequestStatus.REJECTED)),
    )
