"""/metrics: names, types and labels; who may read it; bounded series; constant queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.choices import (
    AgentStatus,
    AlertKind,
    AlertSeverity,
    ClientStatus,
    ErrorClass,
    JobKind,
    JobState,
)
from catalog.models import BackupClient
from requests_app.choices import RequestStatus
from tests import factories
from tests.monitoring.conftest import TOKEN, families, samples, scrape

pytestmark = pytest.mark.django_db

CLIENT_LABELS = {"application", "client", "policy"}
GAUGES = {
    "backup_portal_client_last_good_backup_timestamp_seconds": CLIENT_LABELS,
    "backup_portal_client_rpo_seconds": CLIENT_LABELS,
    "backup_portal_client_rpo_met": CLIENT_LABELS,
    "backup_portal_client_awaiting_first_backup": CLIENT_LABELS,
    "backup_portal_clients": {"status"},
    "backup_portal_jobs_finished_24h": {"kind", "state", "error_class"},
    "backup_portal_restore_tests_24h": {"verdict"},
    "backup_portal_jobs_open": {"kind", "state"},
    "backup_portal_jobs_queued_oldest_age_seconds": set(),
    "backup_portal_agents": {"status"},
    "backup_portal_agents_by_version": {"version_status"},
    "backup_portal_agent_shipped_version_info": {"version"},
    "backup_portal_storage_used_bytes": {"target"},
    "backup_portal_storage_capacity_bytes": {"target"},
    "backup_portal_storage_full_in_days": {"target"},
    "backup_portal_capacity_alert_days": set(),
    "backup_portal_requests": {"kind", "status"},
    "backup_portal_alerts_open": {"kind", "severity"},
    "backup_portal_suspicious_backups": set(),
    "backup_portal_metrics_collect_seconds": set(),
}
LATENCY = "backup_portal_http_request_duration_seconds"


def finished_job(client, state, *, kind=JobKind.BACKUP, error_class="", ago=timedelta(hours=1)):
    now = timezone.now()
    return factories.JobFactory(
        client=client, kind=kind, state=state, error_class=error_class,
        started_at=now - ago - timedelta(minutes=5), finished_at=now - ago,
        backup=None if kind == JobKind.BACKUP else client.backups.first(),
    )  # fmt: skip


@pytest.fixture
def estate(app, other_app, mine, theirs):
    """Two applications; ``late`` missed its RPO, ``fresh`` never had a backup, ``mine`` is protected."""
    policy = mine.client.policy
    late = factories.BackupClientFactory(
        application=other_app, agent=theirs.agent, name="late", policy=policy
    )
    factories.BackupFactory(client=late, taken_at=timezone.now() - timedelta(hours=policy.rpo_hours + 2))
    fresh = factories.BackupClientFactory(application=app, agent=mine.agent, name="fresh", policy=policy)
    factories.BackupClientFactory(application=app, agent=mine.agent, name="old", status=ClientStatus.RETIRED)
    factories.AgentFactory(hostname="quiet.example.com", last_seen_at=timezone.now() - timedelta(hours=2))
    factories.AgentFactory(hostname="new.example.com", last_seen_at=None)
    return {"mine": mine, "theirs": theirs, "late": late, "fresh": fresh}


# --- Names, types, labels ----------------------------------------------------------------------------


def test_every_metric_has_its_name_type_and_labels(client, metrics_token, estate):
    found = families(scrape(client))
    for name, labels in GAUGES.items():
        assert name in found, name
        assert found[name].type == "gauge", name
        assert found[name].documentation, name
        for sample in found[name].samples:
            assert set(sample.labels) == labels, (name, sample.labels)
    # The scrape itself went through the middleware: the histogram is there, with its bounded labels.
    latency = families(scrape(client))[LATENCY]
    assert latency.type == "histogram"
    assert {"method", "route", "status", "le"} <= set(latency.samples[0].labels)


def test_rpo_per_client(client, metrics_token, estate):
    found = families(scrape(client))
    mine, late, fresh = estate["mine"].client, estate["late"], estate["fresh"]

    def key(c):
        return (("application", c.application.slug), ("client", c.name), ("policy", c.policy.name))

    met = samples(found["backup_portal_client_rpo_met"])
    assert met[key(mine)] == 1
    assert met[key(late)] == 0
    assert met[key(fresh)] == 0  # never backed up: not protected
    assert len(met) == 4  # mine, theirs, late, fresh: the retired client is not watched
    # ... but younger than its RPO: waiting for its first backup, which the RPO alert leaves alone.
    assert samples(found["backup_portal_client_awaiting_first_backup"]) == {key(fresh): 1}
    BackupClient.objects.filter(pk=fresh.pk).update(
        created_at=timezone.now() - timedelta(hours=fresh.policy.rpo_hours + 1)
    )
    found = families(scrape(client))
    assert samples(found["backup_portal_client_rpo_met"])[key(fresh)] == 0
    assert samples(found["backup_portal_client_awaiting_first_backup"]) == {}  # now a breach
    assert samples(found["backup_portal_client_rpo_seconds"])[key(mine)] == mine.policy.rpo_hours * 3600
    last_good = samples(found["backup_portal_client_last_good_backup_timestamp_seconds"])
    assert last_good[key(mine)] == pytest.approx(estate["mine"].backup.taken_at.timestamp())
    assert key(fresh) not in last_good


def test_an_unrestorable_point_is_not_a_good_backup(client, metrics_token, estate):
    """The catalog's restorable() rule: a point that failed verification protects nothing."""
    backup = estate["mine"].backup
    backup.verification = "failed"
    backup.save(update_fields=["verification"])
    key = (("application", "orders"), ("client", backup.client.name), ("policy", backup.client.policy.name))
    found = families(scrape(client))
    assert samples(found["backup_portal_client_rpo_met"])[key] == 0
    assert key not in samples(found["backup_portal_client_last_good_backup_timestamp_seconds"])


def test_jobs_agents_storage_requests_alerts(client, metrics_token, estate, owner):
    c = estate["mine"].client
    finished_job(c, JobState.FAILED, error_class=ErrorClass.DISK_FULL)
    finished_job(c, JobState.FAILED, error_class=ErrorClass.DISK_FULL)
    finished_job(c, JobState.FAILED, error_class=ErrorClass.TIMEOUT, ago=timedelta(days=2))  # too old
    finished_job(c, JobState.SUCCEEDED, kind=JobKind.RESTORE_TEST)
    finished_job(c, JobState.FAILED, kind=JobKind.RESTORE_TEST, error_class=ErrorClass.CHECKSUM_MISMATCH)
    now = timezone.now()
    factories.JobFactory(client=estate["fresh"], state=JobState.QUEUED, not_before=now - timedelta(minutes=7))
    factories.JobFactory(client=estate["late"], state=JobState.QUEUED, not_before=now + timedelta(hours=1))
    factories.AlertFactory(client=c, kind=AlertKind.ANOMALY_DETECTED, severity=AlertSeverity.CRITICAL)
    factories.AlertFactory(client=c, resolved_at=timezone.now())  # resolved: not counted
    from requests_app.models import ClientRequest

    ClientRequest.objects.create(
        application=c.application, hostname="db9.example.com", name="db9", plugin="files",
        options={"paths": ["/srv"]}, policy=c.policy, requester=owner,
    )  # fmt: skip

    found = families(scrape(client))
    finished = samples(found["backup_portal_jobs_finished_24h"])
    assert finished[(("error_class", "disk_full"), ("kind", "backup"), ("state", "failed"))] == 2
    assert (("error_class", "timeout"), ("kind", "backup"), ("state", "failed")) not in finished
    assert samples(found["backup_portal_restore_tests_24h"]) == {
        (("verdict", "passed"),): 1, (("verdict", "failed"),): 1,
    }  # fmt: skip
    open_jobs = samples(found["backup_portal_jobs_open"])
    assert open_jobs[(("kind", "backup"), ("state", "queued"))] == 2
    assert open_jobs[(("kind", "restore"), ("state", "running"))] == 0  # every kind × state, zeros too
    assert samples(found["backup_portal_jobs_queued_oldest_age_seconds"])[()] == pytest.approx(420, abs=30)
    agents = samples(found["backup_portal_agents"])
    assert agents == {
        (("status", AgentStatus.ONLINE),): 2, (("status", AgentStatus.SILENT),): 1,
        (("status", AgentStatus.NEVER_SEEN),): 1, (("status", AgentStatus.REVOKED),): 0,
    }  # fmt: skip
    target = c.policy.storage_target
    capacity = samples(found["backup_portal_storage_capacity_bytes"])
    assert capacity[(("target", target.name),)] == target.capacity_bytes
    assert (("target", target.name),) in samples(found["backup_portal_storage_used_bytes"])
    requests = samples(found["backup_portal_requests"])
    assert requests[(("kind", "client"), ("status", RequestStatus.SUBMITTED))] == 1
    assert requests[(("kind", "restore"), ("status", RequestStatus.SUBMITTED))] == 0
    alerts = samples(found["backup_portal_alerts_open"])
    assert alerts[(("kind", "anomaly_detected"), ("severity", "critical"))] == 1
    assert alerts[(("kind", "job_failed"), ("severity", "warning"))] == 0
    assert samples(found["backup_portal_clients"])[(("status", "retired"),)] == 1
    assert samples(found["backup_portal_suspicious_backups"])[()] == 0


def test_suspicious_backups_and_the_capacity_forecast(client, metrics_token, estate, fresh_cache):
    """``Backup.objects.suspicious()`` and ``capacity.forecast_all()``, as the catalog computes them."""
    flagged = estate["mine"].backup
    flagged.anomaly = {"rules": ["shrank"], "size_bytes": 1}
    flagged.save(update_fields=["anomaly"])
    gib = 1024**3
    target = factories.StorageTargetFactory(name="filling", capacity_bytes=100 * gib)
    policy = factories.ProtectionPolicyFactory(storage_target=target, retention_days=365)
    growing = factories.BackupClientFactory(application=estate["mine"].client.application, policy=policy)
    today = timezone.now().replace(hour=3, minute=0, second=0, microsecond=0)
    for day in range(1, 22):
        size = int((1 + 0.25 * (21 - day)) * gib)  # more every day
        factories.BackupFactory(
            client=growing, taken_at=today - timedelta(days=day), expires_at=today + timedelta(days=365),
            size_bytes=size, stored_size_bytes=size,
        )  # fmt: skip

    found = families(scrape(client))
    assert samples(found["backup_portal_suspicious_backups"])[()] == 1
    full_in = samples(found["backup_portal_storage_full_in_days"])
    assert 0 < full_in[(("target", "filling"),)] < 60
    assert (("target", estate["mine"].client.policy.storage_target.name),) not in full_in  # not filling


def test_a_lease_expired_restore_test_gives_no_verdict(client, metrics_token, estate):
    """The portal's rule (catalog.metrics.restore_test_failed): the agent went away, no verdict."""
    c = estate["mine"].client
    finished_job(c, JobState.FAILED, kind=JobKind.RESTORE_TEST, error_class=ErrorClass.LEASE_EXPIRED)
    finished_job(c, JobState.FAILED, kind=JobKind.RESTORE_TEST, error_class=ErrorClass.LEASE_EXPIRED)
    finished_job(c, JobState.SUCCEEDED, kind=JobKind.RESTORE_TEST)

    found = families(scrape(client))

    assert samples(found["backup_portal_restore_tests_24h"]) == {
        (("verdict", "passed"),): 1, (("verdict", "failed"),): 0,
    }  # fmt: skip
    finished = samples(found["backup_portal_jobs_finished_24h"])
    assert finished[(("error_class", "lease_expired"), ("kind", "restore_test"), ("state", "failed"))] == 2


def test_the_queue_backlog_counts_only_jobs_of_online_agents(client, metrics_token, estate):
    """A job queued for a powered-off server waits for its agent: BackupAgentSilent's business."""
    now = timezone.now()
    silent = factories.AgentFactory(hostname="off.example.com", last_seen_at=now - timedelta(hours=3))
    never = factories.AgentFactory(hostname="unborn.example.com", last_seen_at=None)
    revoked = factories.AgentFactory(hostname="gone.example.com", last_seen_at=now, revoked_at=now)
    for agent in (silent, never, revoked):
        off = factories.BackupClientFactory(application=estate["mine"].client.application, agent=agent)
        factories.JobFactory(client=off, state=JobState.QUEUED, not_before=now - timedelta(hours=2))

    age = "backup_portal_jobs_queued_oldest_age_seconds"
    assert samples(families(scrape(client))[age])[()] == 0

    mine = estate["mine"].client
    factories.JobFactory(client=mine, state=JobState.QUEUED, not_before=now - timedelta(minutes=5))
    assert samples(families(scrape(client))[age])[()] == pytest.approx(300, abs=30)


def test_the_capacity_alert_days_are_the_portal_setting(client, metrics_token, estate, settings):
    settings.PORTAL_CAPACITY_ALERT_DAYS = 45
    assert samples(families(scrape(client))["backup_portal_capacity_alert_days"]) == {(): 45}


def test_the_forecast_cache_answers_for_the_day_asked(estate, fresh_cache):
    """A collector given another ``now`` (a test, the benchmark) gets that day's forecast."""
    from catalog.services import capacity
    from portal.metrics.collector import full_in_days

    tb = 10**12
    target = factories.StorageTargetFactory(name="filling", capacity_bytes=int(2.45 * tb))
    filling = factories.BackupClientFactory(
        application=estate["mine"].client.application,
        policy=factories.ProtectionPolicyFactory(storage_target=target),
    )
    now = timezone.now()
    for day in range(21):  # 100 GB a day kept 30 days, for 20 days and today: full in 4 days
        taken = now - timedelta(days=day)
        factories.BackupFactory(
            client=filling, taken_at=taken, expires_at=taken + timedelta(days=30),
            size_bytes=10**11, stored_size_bytes=10**11,
        )  # fmt: skip

    def direct(moment):
        return [(f.target_name, f.days_until_full) for f in capacity.forecast_all(now=moment)
                if f.days_until_full is not None]  # fmt: skip

    later = now + timedelta(days=40)  # everything stored has expired by then: not filling
    assert dict(full_in_days(now))["filling"] == dict(direct(now))["filling"]
    assert full_in_days(later) == direct(later)
    assert full_in_days(later) != full_in_days(now)


def test_latency_routes_are_url_names_not_paths(client, metrics_token, estate, owner):
    client.force_login(owner)
    client.get("/healthz")
    client.get("/no/such/page/42")
    for slug in ("orders", "payroll", "nope"):
        client.get(f"/applications/{slug}/")
    found = families(scrape(client))
    routes = {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for s in found[LATENCY].samples
        if s.name.endswith("_count")
    }
    assert ("GET", "healthz", "2xx") in routes or ("GET", "healthz", "5xx") in routes
    assert ("GET", "other", "4xx") in routes
    detail = {r for r in routes if "orders" in r[1] or "payroll" in r[1] or "nope" in r[1]}
    assert not detail  # never a path or an id
    assert all("/" not in route for _, route, _ in routes)


# --- Who may read it -----------------------------------------------------------------------------------


def test_nothing_configured_means_no_metrics_page(client, settings, estate):
    settings.PORTAL_METRICS_TOKEN, settings.PORTAL_METRICS_ALLOW = "", []
    assert scrape(client).status_code == 404
    assert scrape(client, token=None).status_code == 404


def test_the_token_opens_it_and_nothing_else_does(client, metrics_token, estate):
    missing = scrape(client, token=None)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert b"PORTAL_METRICS_TOKEN" in missing.content
    wrong = scrape(client, token=TOKEN + "x")
    assert wrong.status_code == 403
    assert b"wrong metrics token" in wrong.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert scrape(client).status_code == 200
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


@pytest.mark.parametrize("persona", ["owner_client", "team_client", "root_client"])
def test_a_signed_in_session_does_not_open_it(request, metrics_token, estate, persona):
    """Metrics name every application's clients: not even the backup team's session reads them here."""
    session = request.getfixturevalue(persona)
    response = scrape(session, token=None)
    assert response.status_code == 401
    assert b"orders" not in response.content and b"payroll" not in response.content


def test_an_allowed_network_needs_no_token(client, settings, estate):
    settings.PORTAL_METRICS_TOKEN, settings.PORTAL_METRICS_ALLOW = "", ["10.0.0.0/8", "192.0.2.7"]
    assert scrape(client, token=None, REMOTE_ADDR="10.20.30.40").status_code == 200
    assert scrape(client, token=None, REMOTE_ADDR="192.0.2.7").status_code == 200
    refused = scrape(client, token=None, REMOTE_ADDR="192.0.2.8")
    assert refused.status_code == 403
    assert b"PORTAL_METRICS_ALLOW" in refused.content
    # A token that is not configured opens nothing.
    assert scrape(client, token="anything", REMOTE_ADDR="192.0.2.8").status_code == 403


def test_a_forged_forwarded_for_is_not_an_allowed_address(client, settings, estate):
    settings.PORTAL_METRICS_TOKEN, settings.PORTAL_METRICS_ALLOW = "", ["10.0.0.0/8"]
    settings.NUM_PROXIES = 0
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    # No trusted proxy: the header is the client's own claim.
    spoofed = scrape(client, token=None, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.0.0.5")
    assert spoofed.status_code == 403
    settings.NUM_PROXIES = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # Behind one proxy the client is what the proxy appended; what the client put first counts for nothing.
    forged = scrape(client, token=None, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.5, 203.0.113.9")
    assert forged.status_code == 403
    honest = scrape(client, token=None, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.5")
    assert honest.status_code == 200


def test_token_or_address_either_opens_it(client, settings, estate):
    settings.PORTAL_METRICS_TOKEN, settings.PORTAL_METRICS_ALLOW = TOKEN, ["10.0.0.0/8"]
    assert scrape(client, token=None, REMOTE_ADDR="10.1.1.1").status_code == 200
    assert scrape(client, REMOTE_ADDR="203.0.113.9").status_code == 200
    assert scrape(client, token=None, REMOTE_ADDR="203.0.113.9").status_code == 401
    assert scrape(client, token="nope", REMOTE_ADDR="203.0.113.9").status_code == 403


# --- Bounded series, constant queries ------------------------------------------------------------------


def series_count(client) -> int:
    found = families(scrape(client))
    return sum(len(f.samples) for name, f in found.items() if name != LATENCY)


def test_jobs_do_not_become_series(client, metrics_token, estate):
    c = estate["mine"].client
    finished_job(c, JobState.FAILED, error_class=ErrorClass.DISK_FULL)
    before = series_count(client)
    for _ in range(25):
        finished_job(c, JobState.FAILED, error_class=ErrorClass.DISK_FULL)
        finished_job(c, JobState.SUCCEEDED)
    finished_job(c, JobState.SUCCEEDED)
    # One new series (backup, succeeded, ""), not 51.
    assert series_count(client) == before + 1


def test_query_count_does_not_grow_with_clients(client, metrics_token, estate, fresh_cache):
    scrape(client)  # the capacity forecast is computed once an hour: not part of every scrape

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert scrape(client).status_code == 200
        return len(captured)

    few = queries()
    for n in range(15):
        extra = factories.BackupClientFactory(application=estate["mine"].client.application, name=f"bulk-{n}")
        factories.BackupFactory(client=extra)
        finished_job(extra, JobState.FAILED, error_class=ErrorClass.TIMEOUT)
        factories.AlertFactory(client=extra)
    assert queries() == few
    assert few <= 20


def test_a_malformed_allow_list_is_a_configuration_error_not_an_open_door(client, settings, estate):
    from django.core.exceptions import ImproperlyConfigured

    settings.PORTAL_METRICS_TOKEN, settings.PORTAL_METRICS_ALLOW = "", ["10.0.0.0/8", "not-a-network"]
    with pytest.raises(ImproperlyConfigured, match="not-a-network"):
        scrape(client, token=None, REMOTE_ADDR="10.1.1.1")
