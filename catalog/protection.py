"""Protection status at a glance, computed in SQL: last good backup, RPO, recent failures.

Every function here returns annotations for a queryset, never rows: the
dashboard, the application page and the client page show the status of any
number of clients in a constant number of queries. The "last good backup" of a
client is a correlated ``ORDER BY taken_at DESC LIMIT 1`` subquery, which the
``backup_client_recent_idx`` index answers with one probe per client, however
many millions of backups the catalog holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.db.models import Case, ExpressionWrapper, F, OuterRef, Q, Subquery, Value, When

from catalog.choices import ClientStatus, JobState
from catalog.models import Backup, BackupClient, Job

#: "Failures" on the dashboard are the failed jobs of this recent window.
FAILURE_WINDOW = timedelta(days=7)


class SubqueryCount(Subquery):
    """``(SELECT count(*) FROM (…))``: a count per outer row, without GROUP BY or join fan-out."""

    template = "(SELECT count(*) FROM (%(subquery)s) _count)"
    output_field = models.IntegerField()


def count_of(queryset: models.QuerySet) -> SubqueryCount:
    return SubqueryCount(queryset.order_by().values("pk"))


def last_good_backup_at(client_ref: str = "pk") -> Subquery:
    """When the client named by ``OuterRef(client_ref)`` last got a backup that can be restored (or NULL).

    ``restorable()``: available, not failed verification, and its chain whole (an incremental
    on a damaged full protects nothing).
    """
    newest = Backup.objects.restorable().filter(client=OuterRef(client_ref)).order_by("-taken_at")
    return Subquery(newest.values("taken_at")[:1], output_field=models.DateTimeField())


def rpo_cutoff(now: datetime, rpo_hours: str = "policy__rpo_hours") -> ExpressionWrapper:
    """The oldest acceptable last backup under each row's own policy: now − rpo_hours."""
    # Both wrappers only name types for Django, the SQL is unchanged: SQLite's duration
    # arithmetic refuses a PositiveIntegerField operand, and without a declared type
    # "datetime − (integer × duration)" compiles to a plain, wrong, subtraction.
    hours = ExpressionWrapper(F(rpo_hours), output_field=models.IntegerField())
    rpo = ExpressionWrapper(
        hours * Value(timedelta(hours=1), output_field=models.DurationField()),
        output_field=models.DurationField(),
    )
    return ExpressionWrapper(
        Value(now, output_field=models.DateTimeField()) - rpo, output_field=models.DateTimeField()
    )


def meets_rpo_q() -> Q:
    """For a client queryset annotated by ``with_rpo``: its last good backup is fresh enough."""
    return Q(last_good_at__isnull=False, last_good_at__gte=F("rpo_cutoff"))


def awaiting_first_backup_q() -> Q:
    """For a ``with_rpo`` queryset: no good backup yet, and younger than its RPO (the first scheduled
    backup may not have come round): not protected, but not a breach either."""
    return Q(last_good_at__isnull=True, created_at__gte=F("rpo_cutoff"))


def rpo_breached_q() -> Q:
    """For a ``with_rpo`` queryset: the RPO alert's rule (the portal's watch and Prometheus' rule)."""
    return Q(rpo_met=False) & ~awaiting_first_backup_q()


def with_rpo(queryset: models.QuerySet, now: datetime) -> models.QuerySet:
    """Clients with ``last_good_at``, ``rpo_cutoff`` and ``rpo_met`` (False when never backed up)."""
    return queryset.annotate(
        last_good_at=last_good_backup_at(),
        rpo_cutoff=rpo_cutoff(now),
    ).annotate(
        rpo_met=Case(
            When(meets_rpo_q(), then=Value(True)), default=Value(False), output_field=models.BooleanField()
        ),
    )


def annotate_clients(queryset: models.QuerySet, now: datetime) -> models.QuerySet:
    """Clients with the ``with_rpo`` annotations and ``failures_recent``."""
    failures = Job.objects.filter(
        client=OuterRef("pk"), state=JobState.FAILED, created_at__gte=now - FAILURE_WINDOW
    )
    return with_rpo(queryset, now).annotate(failures_recent=count_of(failures))


def annotate_applications(queryset: models.QuerySet, now: datetime) -> models.QuerySet:
    """Applications with client counts, last good backup, RPO breaches and recent failures.

    An application "meets RPO" when ``active_clients`` > 0 and ``rpo_breaches`` == 0:
    every active client's last good backup is newer than now − its policy's RPO.
    Paused and pending clients are shown but do not count against the RPO.
    """
    clients = BackupClient.objects.filter(application=OuterRef("pk"))
    live = clients.exclude(status=ClientStatus.RETIRED)
    active = with_rpo(clients.filter(status=ClientStatus.ACTIVE), now)
    newest = (
        clients.annotate(last_good_at=last_good_backup_at())
        .filter(last_good_at__isnull=False)
        .order_by("-last_good_at")
        .values("last_good_at")[:1]
    )
    failures = Job.objects.filter(
        client__application=OuterRef("pk"),
        state=JobState.FAILED,
        created_at__gte=now - FAILURE_WINDOW,
    )
    return queryset.annotate(
        client_count=count_of(live),
        active_clients=count_of(active),
        rpo_breaches=count_of(active.filter(rpo_met=False)),
        last_good_at=Subquery(newest, output_field=models.DateTimeField()),
        failures_recent=count_of(failures),
    )
