"""The catalog's work-done counts, by ISO week: jobs run, manual jobs, alerts acknowledged.

Each function is one SQL query grouped by week (Monday 00:00 in ``TIME_ZONE``);
its rows are ``{"week": ..., <count>: n, ...}``. requests_app.metrics puts them
together with the request decisions (the definitions are in its docstring), and
reports.operations sums them over a month.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncWeek

from catalog.choices import ErrorClass, JobKind, JobState, JobTrigger
from catalog.models import Alert, Job


def restore_test_failed() -> Q:
    """A restore test that failed with a verdict on its backup: not one whose agent went away.

    The rule of ``catalog.services.jobs._restore_test_failed``: a lease-expired test says nothing
    about the backup (no alert, no verification) and tomorrow's run tries again. The one definition
    of a "failed restore test" for counts: this report's and /metrics (``portal.metrics.collector``).
    """
    return Q(kind=JobKind.RESTORE_TEST, state=JobState.FAILED) & ~Q(error_class=ErrorClass.LEASE_EXPIRED)


def restore_test_passed() -> Q:
    """A restore test that passed: the backup was restored and verified."""
    return Q(kind=JobKind.RESTORE_TEST, state=JobState.SUCCEEDED)


def by_week(queryset: QuerySet, moment: str, since: datetime, until: datetime, **counts) -> QuerySet:
    """``counts`` of the rows whose ``moment`` falls in [since, until), one row per week."""
    return (
        queryset.filter(**{f"{moment}__gte": since, f"{moment}__lt": until})
        .annotate(week=TruncWeek(moment))
        .order_by()
        .values("week")
        .annotate(**counts)
    )


def job_counts(since: datetime, until: datetime) -> QuerySet:
    """Jobs run, retries that recovered, restore tests run and failed: terminal jobs by ``finished_at``."""
    finished = Job.objects.filter(state__in=JobState.terminal())
    return by_week(
        finished,
        "finished_at",
        since,
        until,
        jobs_run=Count("pk"),
        retries_recovered=Count("pk", filter=Q(trigger=JobTrigger.RETRY, state=JobState.SUCCEEDED)),
        restore_tests_run=Count("pk", filter=Q(kind=JobKind.RESTORE_TEST)),
        restore_tests_failed=Count("pk", filter=restore_test_failed()),
    )


def manual_job_counts(since: datetime, until: datetime) -> QuerySet:
    """Jobs a person started by hand, by ``created_at``."""
    manual = Job.objects.filter(trigger=JobTrigger.USER)
    return by_week(manual, "created_at", since, until, manual_jobs=Count("pk"))


def acknowledgement_counts(since: datetime, until: datetime) -> QuerySet:
    """Alerts acknowledged, by ``acknowledged_at``."""
    acknowledged = Alert.objects.filter(acknowledged_at__isnull=False)
    return by_week(acknowledged, "acknowledged_at", since, until, alerts_acknowledged=Count("pk"))
