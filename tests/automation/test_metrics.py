"""Work-done metrics from an estate with known counts over two full weeks and the current one.

The calendar (UTC): "now" is Wednesday 12 March 2025. The current week began Monday 10 March;
the last full week ("B") is 3–9 March, the one before ("A") 24 February – 2 March.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.choices import ErrorClass, JobKind, JobState, JobTrigger
from requests_app import metrics
from requests_app.choices import ActorKind, Channel, RequestStatus
from requests_app.models import AuditEvent
from tests import factories
from tests.requests.factories import ClientRequestFactory, RestoreRequestFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)
CURRENT, WEEK_B, WEEK_A = date(2025, 3, 10), date(2025, 3, 3), date(2025, 2, 24)


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, second, tzinfo=UTC)


class Estate:
    """Builds rows with explicit timestamps; ``finished`` is when a job reached its terminal state."""

    def __init__(self, client, person, backup):
        self.client, self.person, self.backup = client, person, backup

    def job(self, finished=None, *, state=JobState.SUCCEEDED, created=None, **fields):
        created = created or (finished - timedelta(minutes=30) if finished else NOW)
        if fields.get("kind", JobKind.BACKUP) != JobKind.BACKUP:
            fields.setdefault("backup", self.backup)
        if state == JobState.RUNNING:
            fields.setdefault("lease_expires_at", NOW + timedelta(minutes=2))
        return factories.JobFactory(
            client=self.client, state=state, created_at=created, finished_at=finished, **fields
        )

    def decision(
        self,
        when,
        *,
        to_status,
        actor_kind=ActorKind.USER,
        from_status=RequestStatus.SUBMITTED,
        kind="restore",
    ):
        request = (
            RestoreRequestFactory(backup=self.backup)
            if kind == "restore"
            else ClientRequestFactory(application=self.client.application)
        )
        person = None if actor_kind == ActorKind.SYSTEM else self.person
        return AuditEvent.objects.create(
            occurred_at=when,
            application=self.client.application,
            restore_request=request if kind == "restore" else None,
            client_request=request if kind == "client" else None,
            actor_kind=actor_kind,
            actor_user=person,
            actor_label=person.username if person else "system",
            channel=Channel.SYSTEM if person is None else Channel.ADMIN,
            action=str(to_status),
            from_status=from_status,
            to_status=to_status,
        )

    def acknowledged(self, when, *, raised=None):
        return factories.AlertFactory(
            client=self.client,
            created_at=raised or when - timedelta(hours=1),
            acknowledged_at=when,
            acknowledged_by=self.person,
        )


@pytest.fixture
def estate(app, backup_admin):
    client = factories.BackupClientFactory(application=app)
    # Its own job is succeeded but never finished (finished_at NULL): counted nowhere.
    backup = factories.BackupFactory(client=client)
    return Estate(client, backup_admin, backup)


@pytest.fixture
def two_weeks(estate):
    e = estate
    # Week A: 4 scheduled backups, 1 manual backup; a second manual one started Sunday night
    # and finished on Monday (manual in A, run in B).
    for day in (24, 25, 26, 27):
        e.job(at(day, month=2))
    e.job(at(28, month=2), trigger=JobTrigger.USER)
    e.job(at(3, 0, 30), created=at(2, 23, 0), trigger=JobTrigger.USER)
    e.decision(at(26, month=2), to_status=RequestStatus.APPROVED)
    e.acknowledged(at(27, month=2))

    # Week B: 6 scheduled (one at the last second of Sunday), 1 failed, 2 retries recovered,
    # 1 retry failed, 1 manual, 3 restore tests (1 failed on the backup, 1 lost its agent),
    # 1 removal cancelled.
    for day in (3, 4, 5, 6, 7):
        e.job(at(day))
    e.job(at(9, 23, 59, 59))
    e.job(at(4), state=JobState.FAILED, error_class=ErrorClass.PERMISSION_DENIED)
    e.job(at(4, 13), trigger=JobTrigger.RETRY)
    e.job(at(5, 13), trigger=JobTrigger.RETRY)
    e.job(at(6, 13), trigger=JobTrigger.RETRY, state=JobState.FAILED, error_class=ErrorClass.TIMEOUT)
    e.job(at(4, 15), trigger=JobTrigger.USER)
    e.job(at(5, 4), kind=JobKind.RESTORE_TEST, trigger=JobTrigger.SYSTEM)
    e.job(
        at(6, 4),
        kind=JobKind.RESTORE_TEST,
        trigger=JobTrigger.SYSTEM,
        state=JobState.FAILED,
        error_class=ErrorClass.CHECKSUM_MISMATCH,
    )
    e.job(
        at(7, 4),
        kind=JobKind.RESTORE_TEST,
        trigger=JobTrigger.SYSTEM,
        state=JobState.FAILED,
        error_class=ErrorClass.LEASE_EXPIRED,
    )
    e.job(at(8), kind=JobKind.EXPIRE, trigger=JobTrigger.SYSTEM, state=JobState.CANCELLED)
    # Not finished: counted nowhere.
    e.job(None, state=JobState.QUEUED, created=at(8))
    e.job(None, state=JobState.RUNNING, created=at(8), kind=JobKind.RESTORE)  # one backup open at a time

    e.decision(at(3), to_status=RequestStatus.APPROVED, actor_kind=ActorKind.SYSTEM)
    e.decision(at(4), to_status=RequestStatus.APPROVED, actor_kind=ActorKind.SYSTEM, kind="client")
    e.decision(at(5), to_status=RequestStatus.APPROVED)
    e.decision(at(6), to_status=RequestStatus.REJECTED, kind="client")
    e.decision(at(7), to_status=RequestStatus.APPROVED, actor_kind=ActorKind.API_KEY)
    # Not decisions: a submission and a cancellation.
    e.decision(at(7), to_status=RequestStatus.SUBMITTED, from_status="")
    e.decision(at(8), to_status=RequestStatus.CANCELLED, from_status=RequestStatus.APPROVED)

    e.acknowledged(at(3, 9))
    e.acknowledged(at(8), raised=at(1, month=3))  # raised in week A, acknowledged in B

    # The current week: one job, on the first second of Monday.
    e.job(at(10, 0, 0, 0))
    # Before the window (8 weeks from 20 January): ignored.
    e.job(at(10, month=1), trigger=JobTrigger.USER)
    e.acknowledged(at(10, month=1))


def week(automation, start: date) -> metrics.Week:
    return next(w for w in automation.weeks if w.start == start)


def test_eight_weeks_oldest_first_the_current_one_in_progress(two_weeks):
    automation = metrics.weekly(now=NOW)
    assert [w.start for w in automation.weeks] == [CURRENT - timedelta(weeks=n) for n in range(7, -1, -1)]
    assert [w.in_progress for w in automation.weeks] == [False] * 7 + [True]


def test_week_a_counts(two_weeks):
    a = week(metrics.weekly(now=NOW), WEEK_A)
    assert (a.jobs_run, a.manual_jobs, a.decisions_by_person, a.alerts_acknowledged) == (5, 2, 1, 1)
    assert a.human_actions == 4
    assert a.per_thousand_jobs == 800.0


def test_week_b_counts(two_weeks):
    b = week(metrics.weekly(now=NOW), WEEK_B)
    assert b.jobs_run == 16
    assert b.retries_recovered == 2
    assert (b.restore_tests_run, b.restore_tests_failed) == (3, 1)
    assert (b.approved_by_system, b.approved_by_person, b.rejected_by_person) == (2, 2, 1)
    assert b.manual_jobs == 1
    assert b.alerts_acknowledged == 2
    assert b.human_actions == 1 + 3 + 2
    assert b.per_thousand_jobs == 375.0


def test_headline_is_the_last_full_week_and_its_trend(two_weeks):
    automation = metrics.weekly(now=NOW)
    assert automation.last_full_week.start == WEEK_B
    assert automation.week_before.start == WEEK_A
    assert automation.trend == 375.0 - 800.0


def test_current_week_and_empty_weeks(two_weeks):
    automation = metrics.weekly(now=NOW)
    current = week(automation, CURRENT)
    assert (current.jobs_run, current.human_actions, current.per_thousand_jobs) == (1, 0, 0.0)
    empty = week(automation, WEEK_A - timedelta(weeks=1))
    assert (empty.jobs_run, empty.human_actions, empty.per_thousand_jobs) == (0, 0, None)


def test_trend_needs_two_weeks_with_jobs(estate):
    estate.job(at(5))
    automation = metrics.weekly(now=NOW)
    assert week(automation, WEEK_B).per_thousand_jobs == 0.0
    assert automation.trend is None


def test_decisions_made_by_the_services_are_counted_as_they_happen(owner, app, backup_admin):
    """Through the real workflow, at the real time: who decided is what the audit trail says."""
    from requests_app import services
    from requests_app.actors import Actor
    from requests_app.models import RestoreRequest
    from tests.requests.factories import submit_client, submit_restore

    submit_client(owner, application=app, policy=factories.ProtectionPolicyFactory(auto_approve_clients=True))
    waiting = submit_restore(owner, backup=factories.BackupFactory(client__application=app))
    services.approve(RestoreRequest, waiting.pk, actor=Actor.person(backup_admin, Channel.ADMIN))

    this_week = metrics.weekly().weeks[-1]
    assert (this_week.approved_by_system, this_week.approved_by_person) == (1, 1)
    assert this_week.human_actions == 1


def test_metrics_cost_five_queries_however_many_rows(estate):
    for day in (3, 4):
        estate.job(at(day))
        estate.decision(at(day), to_status=RequestStatus.APPROVED)
        estate.acknowledged(at(day))
    with CaptureQueriesContext(connection) as few:
        metrics.weekly(now=NOW)
    for day in range(3, 10):
        for _ in range(3):
            estate.job(at(day), trigger=JobTrigger.USER)
            estate.decision(at(day), to_status=RequestStatus.REJECTED)
            estate.acknowledged(at(day))
    with CaptureQueriesContext(connection) as many:
        automation = metrics.weekly(now=NOW)
    assert week(automation, WEEK_B).jobs_run == 2 + 21
    assert len(few) == len(many) == 5  # jobs, manual jobs, decisions, acknowledgements, usage
