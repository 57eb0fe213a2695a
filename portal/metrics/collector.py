"""The catalog as Prometheus series, read at scrape time from a few aggregate queries.

Every figure comes from the database when Prometheus asks, so any gunicorn worker
answers the same (docs/monitoring.md); the one exception is the capacity forecast,
which moves by the day and is reused for an hour (``full_in_days``). The number of
queries is fixed (12, and the forecast's own once an hour), whatever the number of
clients, jobs or agents; the per-client series are one query (``catalog.protection.with_rpo``,
the dashboard's own RPO rule).

Series stay bounded: labels are clients (one workload each, the size of the estate),
storage targets, and the catalog's own enumerations (kinds, states, error classes,
statuses, severities). No job, backup, user or request ever becomes a label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import BooleanField, Case, Count, Min, Q, Value, When
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from catalog import agent_versions
from catalog.choices import (
    AgentStatus,
    AlertKind,
    AlertSeverity,
    ClientStatus,
    JobKind,
    JobState,
)
from catalog.metrics import restore_test_failed, restore_test_passed
from catalog.models import Agent, Alert, Backup, BackupClient, Job, StorageTarget
from catalog.protection import awaiting_first_backup_q, with_rpo
from catalog.services import capacity
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest

PREFIX = "backup_portal"
#: Jobs "finished" are those that ended in this window: a rate over a day, immune to purges and restarts.
FINISHED_WINDOW = timedelta(hours=24)
CLIENT_LABELS = ["application", "client", "policy"]
FORECAST_CACHE_KEY = "portal.metrics:storage_full_in_days"
FORECAST_TTL = timedelta(hours=1)


def gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def full_in_days(now: datetime) -> list[tuple[str, float]]:
    """Each filling target's days until full, from ``capacity.forecast_all``, at most FORECAST_TTL old.

    The forecast reads every stored backup (seconds on a large catalog: docs/performance.md) and moves
    by the day, so a scrape reuses it for an hour instead of computing it every minute. In Django's
    cache: per process with the default local-memory cache, shared when a shared one is configured.
    Keyed by the day of ``now``, the day the forecast counts from: a collector asked about another
    day (a test, the benchmark) never gets a forecast made for a different one.
    """

    def compute() -> list[tuple[str, float]]:
        return [
            (forecast.target_name, forecast.days_until_full)
            for forecast in capacity.forecast_all(now=now)
            if forecast.days_until_full is not None
        ]

    key = f"{FORECAST_CACHE_KEY}:{timezone.localdate(now).isoformat()}"
    return cache.get_or_set(key, compute, FORECAST_TTL.total_seconds())


class PortalCollector:
    """A prometheus_client collector: ``collect()`` yields one family per metric of docs/monitoring.md."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now

    def describe(self) -> list[Metric]:
        # Registering must not run the queries (without describe(), prometheus_client would collect()).
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        now = self.now or timezone.now()
        yield from self.clients(now)
        yield from self.jobs(now)
        yield self.agents(now)
        yield from self.agents_by_version()
        yield from self.storage(now)
        yield self.requests()
        yield self.alerts()
        yield self.suspicious()
        scrape = gauge("metrics_collect_seconds", "Time the portal took to compute these metrics.")
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

    def clients(self, now: datetime) -> Iterator[Metric]:
        last_good = gauge(
            "client_last_good_backup_timestamp_seconds",
            "When the client's newest restorable recovery point was taken (absent: none).",
            CLIENT_LABELS,
        )
        rpo = gauge("client_rpo_seconds", "The client's policy RPO: the oldest acceptable last good backup.",
                    CLIENT_LABELS)  # fmt: skip
        met = gauge("client_rpo_met", "1 when the last good backup is within the RPO, else 0.", CLIENT_LABELS)
        awaiting = gauge(
            "client_awaiting_first_backup",
            "1 for a client with no good backup yet that is younger than its RPO (not a breach yet); "
            "absent for every other client.",
            CLIENT_LABELS,
        )
        rows = (
            with_rpo(BackupClient.objects.filter(status=ClientStatus.ACTIVE), now)
            .annotate(awaiting=Case(When(awaiting_first_backup_q(), then=Value(True)), default=Value(False),
                                    output_field=BooleanField()))  # fmt: skip
            .order_by()
            .values_list("application__slug", "name", "policy__name", "policy__rpo_hours", "last_good_at",
                         "rpo_met", "awaiting")  # fmt: skip
        )
        for slug, name, policy, rpo_hours, last_good_at, rpo_met, is_awaiting in rows:
            labels = [slug, name, policy]
            if last_good_at is not None:
                last_good.add_metric(labels, last_good_at.timestamp())
            rpo.add_metric(labels, rpo_hours * 3600)
            met.add_metric(labels, 1 if rpo_met else 0)
            if is_awaiting:
                awaiting.add_metric(labels, 1)
        yield from (last_good, rpo, met, awaiting)

        by_status = gauge("clients", "Clients by status.", ["status"])
        counts = dict(BackupClient.objects.order_by().values_list("status").annotate(n=Count("pk")))
        for status in ClientStatus.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status

    def jobs(self, now: datetime) -> Iterator[Metric]:
        finished = gauge(
            "jobs_finished_24h",
            "Jobs that ended in the last 24 hours, by kind, final state and error class ('' unless failed).",
            ["kind", "state", "error_class"],
        )
        tests = gauge(
            "restore_tests_24h",
            "Restore tests that ended in the last 24 hours, by verdict (passed, failed; a test whose "
            "agent went away, lease_expired, gives none).",
            ["verdict"],
        )
        verdicts = {"passed": 0, "failed": 0}
        # The verdicts in the same grouped query, by catalog.metrics' one rule of a failed restore test.
        rows = (
            Job.objects.filter(finished_at__gte=now - FINISHED_WINDOW, state__in=JobState.terminal())
            .order_by()
            .values_list("kind", "state", "error_class")
            .annotate(
                n=Count("pk"),
                passed=Count("pk", filter=restore_test_passed()),
                failed=Count("pk", filter=restore_test_failed()),
            )
        )
        for kind, state, error_class, n, passed, failed in rows:
            finished.add_metric([kind, state, error_class], n)
            verdicts["passed"] += passed
            verdicts["failed"] += failed
        for verdict, n in verdicts.items():
            tests.add_metric([verdict], n)
        yield from (finished, tests)

        open_jobs = gauge("jobs_open", "Queued and running jobs, by kind and state.", ["kind", "state"])
        counts = {
            (kind, state): n
            for kind, state, n in Job.objects.filter(state__in=JobState.open())
            .order_by()
            .values_list("kind", "state")
            .annotate(n=Count("pk"))
        }
        for kind in JobKind.values:
            for state in JobState.open():
                open_jobs.add_metric([kind, state], counts.get((kind, state), 0))
        yield open_jobs

        # Waiting since it became due (a retry's backoff is not a backlog); 0 with nothing waiting.
        # Only jobs whose agent is online, by Agent.status's own rule: a job queued for a powered-off
        # server waits for its agent, not in a backlog (the agent's silence has its own alert).
        online = Agent.objects.with_status(AgentStatus.ONLINE, now).values("pk")
        oldest = (
            Job.objects.filter(state=JobState.QUEUED, not_before__lte=now, agent_id__in=online)
            .order_by()
            .aggregate(oldest=Min("not_before"))["oldest"]
        )
        age = gauge(
            "jobs_queued_oldest_age_seconds",
            "How long the longest-waiting due job of an online agent has waited.",
        )
        age.add_metric([], (now - oldest).total_seconds() if oldest else 0)
        yield age

    def agents(self, now: datetime) -> Metric:
        """Agents by ``Agent.status``, in one query through its SQL twin ``AgentQuerySet.with_status``."""
        counts = Agent.objects.order_by().aggregate(
            **{
                status: Count("pk", filter=Q(pk__in=Agent.objects.with_status(status, now).values("pk")))
                for status in AgentStatus.values
            }
        )
        family = gauge("agents", "Agents by status (online, silent, never_seen, revoked).", ["status"])
        for status in AgentStatus.values:
            family.add_metric([status], counts[status])
        return family

    def agents_by_version(self) -> Iterator[Metric]:
        """Live agents by ``version_status`` (current, outdated, unsupported: catalog.agent_versions).

        One query: the (version, protocol) pairs in use, counted; an estate runs a handful.
        """
        counts = dict.fromkeys(agent_versions.STATUSES, 0)
        pairs = (
            Agent.objects.filter(revoked_at__isnull=True)
            .order_by()
            .values_list("version", "protocol")
            .annotate(n=Count("pk"))
        )
        for version, protocol, n in pairs:
            counts[agent_versions.status(version, protocol)] += n
        family = gauge(
            "agents_by_version",
            "Live agents by version status: current, outdated (older than the agent the portal ships), "
            "unsupported (older than its oldest protocol: refused).",
            ["version_status"],
        )
        for status in agent_versions.STATUSES:
            family.add_metric([status], counts[status])
        shipped = gauge(
            "agent_shipped_version_info", "The agent version the portal ships (always 1).", ["version"]
        )
        shipped.add_metric([agent_versions.shipped_version()], 1)
        yield from (family, shipped)

    def storage(self, now: datetime) -> Iterator[Metric]:
        used = gauge("storage_used_bytes", "Bytes stored on the target (the catalog's count).", ["target"])
        total = gauge("storage_capacity_bytes", "What the portal may store on the target.", ["target"])
        for name, used_bytes, capacity_bytes in StorageTarget.objects.order_by("name").values_list(
            "name", "used_bytes", "capacity_bytes"
        ):
            used.add_metric([name], used_bytes)
            total.add_metric([name], capacity_bytes)
        yield from (used, total)

        full_in = gauge(
            "storage_full_in_days",
            "Days until the target is full at its current trend, retention included (absent: not filling).",
            ["target"],
        )
        for target_name, days in full_in_days(now):
            full_in.add_metric([target_name], days)
        yield full_in
        ahead = gauge(
            "capacity_alert_days",
            "PORTAL_CAPACITY_ALERT_DAYS: a target forecast full within this many days needs capacity.",
        )
        ahead.add_metric([], settings.PORTAL_CAPACITY_ALERT_DAYS)
        yield ahead

    def requests(self) -> Metric:
        family = gauge("requests", "Client and restore requests, by kind and status.", ["kind", "status"])
        for model in (ClientRequest, RestoreRequest):
            counts = dict(model.objects.order_by().values_list("status").annotate(n=Count("pk")))
            for status in RequestStatus.values:
                family.add_metric([model.kind, status], counts.get(status, 0))
        return family

    def suspicious(self) -> Metric:
        family = gauge(
            "suspicious_backups",
            "Recovery points unlike their client's history and not acknowledged (docs/anomalies.md).",
        )
        family.add_metric([], Backup.objects.suspicious().count())
        return family

    def alerts(self) -> Metric:
        family = gauge("alerts_open", "Open (unresolved) alerts, by kind and severity.", ["kind", "severity"])
        counts = {
            (kind, severity): n
            for kind, severity, n in Alert.objects.open()
            .order_by()
            .values_list("kind", "severity")
            .annotate(n=Count("pk"))
        }
        for kind in AlertKind.values:
            for severity in AlertSeverity.values:
                family.add_metric([kind, severity], counts.get((kind, severity), 0))
        return family
