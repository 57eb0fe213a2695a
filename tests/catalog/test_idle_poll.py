"""Issue #13: an idle poll writes nothing, and the silent-agent watch stays exact.

Through the agent API (the agent's bearer token) where the agent is concerned;
time is moved with explicit ``now`` where the heartbeat and the watch are judged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from catalog import allow_list as allow_lists
from catalog.agent_api.serializers import PollSerializer, plain_poll, validated_poll
from catalog.choices import AgentStatus, AlertKind, JobKind, JobState
from catalog.models import Agent, Alert, Job, agent_heartbeat_period
from catalog.services import agents, alerts
from tests import factories
from tests.helpers import agent_client

POLL = "/api/agent/v1/poll"
INSTANCE = {"id": "c" * 32, "host": "db01.example.com"}
ALLOW = {"paths": ["/srv/app"], "restore_roots": [], "commands": [], "databases": [], "storage": ["/mnt/p"]}
WRITES = ("INSERT", "UPDATE", "DELETE", "SAVEPOINT", "RELEASE", "BEGIN", "COMMIT", "ROLLBACK")


def body(**changes) -> dict:
    poll = {"version": "0.2.0", "protocol": 2, "plugins": ["files"], "running": [], "allow": ALLOW}
    poll["instance"] = INSTANCE
    poll.update(changes)
    return poll


def poll(api, **changes):
    response = api.post(POLL, body(**changes), format="json")
    assert response.status_code == 200, response.content
    return response.json()


def writes(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]


def agent_updates(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].startswith('UPDATE "catalog_agent"')]


def age(agent: Agent, seconds: float) -> None:
    """Move the agent's recorded last poll ``seconds`` into the past."""
    Agent.objects.filter(pk=agent.pk).update(last_seen_at=timezone.now() - timedelta(seconds=seconds))


@pytest.fixture
def steady(db):
    """An agent that has polled once with this body: the steady state from here on."""
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)
    poll(api)
    return agent, api


def silent_alert(agent: Agent) -> Alert:
    return factories.AlertFactory(
        kind=AlertKind.AGENT_SILENT, key=alerts.agent_key(AlertKind.AGENT_SILENT, agent.pk), agent=agent
    )


# --- An idle poll: one read, no write --------------------------------------------------------


def test_an_idle_poll_makes_one_read_and_no_write(steady):
    _, api = steady
    with CaptureQueriesContext(connection) as captured:
        assert poll(api) == {"jobs": [], "poll_after": settings.PORTAL_AGENT_POLL_SECONDS}
    # The agent and its open jobs, by its token (the issue allows two reads).
    assert len(captured) == 1, [q["sql"] for q in captured.captured_queries]
    assert writes(captured) == []  # no write and no transaction (SQLite's BEGIN IMMEDIATE, a savepoint)


def test_an_idle_poll_with_a_running_job_and_a_retry_waiting_writes_nothing(steady):
    agent, api = steady
    running = factories.JobFactory(agent=agent, client=factories.BackupClientFactory(agent=agent))
    factories.JobFactory(
        agent=agent,
        client=factories.BackupClientFactory(agent=agent),
        not_before=timezone.now() + timedelta(minutes=10),  # a retry in its backoff
    )
    assert [job["id"] for job in poll(api)["jobs"]] == [running.pk]
    with CaptureQueriesContext(connection) as captured:
        assert poll(api, running=[running.pk])["jobs"] == []
    assert len(captured) == 1
    assert writes(captured) == []


@pytest.mark.django_db(transaction=True)
def test_an_idle_poll_commits_nothing():
    """Outside the test's own transaction: no transaction opened, nothing committed (both databases)."""
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)
    poll(api)
    with (
        mock.patch.object(connection, "commit", wraps=connection.commit) as commit,
        mock.patch.object(connection, "set_autocommit", wraps=connection.set_autocommit) as begin,
        CaptureQueriesContext(connection) as captured,
    ):
        poll(api)
        assert not connection.in_atomic_block
    assert (commit.call_count, begin.call_count) == (0, 0)
    assert writes(captured) == []


# --- The heartbeat: written when it matters -----------------------------------------------------


@pytest.mark.parametrize(
    "change, field, expected",
    [
        ({"version": "0.3.0"}, "version", "0.3.0"),
        ({"protocol": 3}, "protocol", 3),
        ({"plugins": ["files", "mysql"]}, "plugins", ["files", "mysql"]),
        ({"allow": {**ALLOW, "paths": ["/srv/app", "/etc"]}}, "allow_list", None),
    ],
)
def test_the_heartbeat_is_written_when_the_agent_reports_a_change(steady, change, field, expected):
    agent, api = steady
    before = Agent.objects.get(pk=agent.pk).last_seen_at
    with CaptureQueriesContext(connection) as captured:
        poll(api, **change)
    assert len(agent_updates(captured)) == 1
    agent.refresh_from_db()
    expected = allow_lists.normalise(change["allow"]) if field == "allow_list" else expected
    assert getattr(agent, field) == expected
    assert agent.last_seen_at > before
    with CaptureQueriesContext(connection) as captured:
        poll(api, **change)  # the same again: nothing to record
    assert agent_updates(captured) == []


@pytest.mark.parametrize(
    "allow",
    [
        {key: list(reversed(value)) for key, value in ALLOW.items()},  # same, another order
        {**ALLOW, "paths": ["/srv/app", "/srv/app", ""]},  # same once normalised
        None,  # an older agent: the last reported allow-list stays
    ],
)
def test_an_allow_list_that_normalises_to_the_recorded_one_is_no_change(steady, allow):
    agent, api = steady
    with CaptureQueriesContext(connection) as captured:
        poll(api, allow=allow)
    assert agent_updates(captured) == []
    agent.refresh_from_db()
    assert agent.allow_list == allow_lists.normalise(ALLOW)


def test_the_heartbeat_is_written_once_the_recorded_poll_is_a_period_old(steady):
    agent, api = steady
    period = agent_heartbeat_period().total_seconds()
    assert period > 0
    age(agent, period - 5)
    with CaptureQueriesContext(connection) as captured:
        poll(api)
    assert agent_updates(captured) == []

    age(agent, period)
    with CaptureQueriesContext(connection) as captured:
        poll(api)
    assert len(agent_updates(captured)) == 1
    agent.refresh_from_db()
    assert timezone.now() - agent.last_seen_at < timedelta(seconds=5)
    assert [q for q in captured.captured_queries if "catalog_alert" in q["sql"]] == []  # it was not silent


def test_the_first_poll_after_a_silence_records_it_and_closes_the_silent_alert(steady):
    agent, api = steady
    age(agent, settings.PORTAL_AGENT_SILENT_AFTER + 1)
    alert = silent_alert(agent)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.SILENT

    poll(api)

    agent.refresh_from_db()
    assert agent.status == AgentStatus.ONLINE
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_a_never_seen_agent_is_recorded_on_its_first_poll(db):
    agent = factories.AgentFactory(last_seen_at=None)
    api, _ = agent_client(agent)
    poll(api)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ONLINE


# --- The silent-agent watch stays exact ------------------------------------------------------------


def poll_at(agent: Agent, now) -> bool:
    """One idle poll at ``now``, as the API makes it (the row as authentication reads it)."""
    return agents.heartbeat(
        Agent.objects.get(pk=agent.pk), version="0.1.0", plugins=agent.plugins, protocol=1, now=now
    )


def silent_at(agent: Agent, now) -> bool:
    """Silent at ``now`` for both the SQL status and the model's property."""
    in_sql = Agent.objects.with_status(AgentStatus.SILENT, now).filter(pk=agent.pk).exists()
    with mock.patch("django.utils.timezone.now", return_value=now):
        in_python = Agent.objects.get(pk=agent.pk).status == AgentStatus.SILENT
    assert in_sql == in_python
    return in_sql


@pytest.mark.parametrize("interval", [0, 10])
def test_an_agent_polling_every_interval_is_never_flagged(db, interval):
    """Hundreds of polls, a poll interval (plus ``interval`` seconds late) apart, judged just before each."""
    step = timedelta(seconds=settings.PORTAL_AGENT_POLL_SECONDS + interval)
    start = timezone.now()
    agent = factories.AgentFactory(version="0.1.0", last_seen_at=start)
    written = 0
    for n in range(1, 200):
        now = start + n * step
        assert not silent_at(agent, now - timedelta(microseconds=1)), f"flagged before poll {n}"
        assert agents.watch_silent_agents(now=now - timedelta(microseconds=1)) == 0
        written += poll_at(agent, now)
    assert not Alert.objects.exists()
    assert written < 199 * 0.6  # and most of those polls wrote nothing


@pytest.mark.parametrize("polls", [1, 2, 3, 4, 5])
def test_an_agent_that_stops_polling_is_flagged_within_its_threshold(db, polls):
    """Whatever its last poll recorded, it is silent SILENT_AFTER after its real last poll."""
    step = timedelta(seconds=settings.PORTAL_AGENT_POLL_SECONDS)
    silent_after = timedelta(seconds=settings.PORTAL_AGENT_SILENT_AFTER)
    start = timezone.now()
    agent = factories.AgentFactory(version="0.1.0", last_seen_at=start)
    last = start
    for n in range(1, polls + 1):
        last = start + n * step
        poll_at(agent, last)

    just_after = last + silent_after + timedelta(seconds=1)
    assert silent_at(agent, just_after)
    assert agents.watch_silent_agents(now=just_after) == 1
    alert = Alert.objects.get(kind=AlertKind.AGENT_SILENT, agent=agent)
    assert alert.resolved_at is None
    # Its next poll ends the silence and closes the alert.
    assert poll_at(agent, just_after + step)
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_the_watch_closes_a_silent_alert_raised_in_a_race_with_the_heartbeat(db):
    """The alert was raised just after the poll that ended the silence: the next watch closes it."""
    online = factories.AgentFactory()
    still_silent = factories.AgentFactory(last_seen_at=timezone.now() - timedelta(hours=1))
    raced, kept = silent_alert(online), silent_alert(still_silent)

    assert agents.watch_silent_agents() == 0  # still_silent has its alert already

    raced.refresh_from_db()
    kept.refresh_from_db()
    assert raced.resolved_at is not None
    assert kept.resolved_at is None


def test_the_heartbeat_period_keeps_an_on_time_agent_inside_the_threshold(settings):
    assert agent_heartbeat_period() == timedelta(seconds=75)  # the defaults: (180 − 30) / 2
    settings.PORTAL_AGENT_HEARTBEAT_SECONDS = 40
    assert agent_heartbeat_period() == timedelta(seconds=40)
    settings.PORTAL_AGENT_SILENT_AFTER = 60  # an override below what the setting allows: clamped
    assert agent_heartbeat_period() == timedelta(seconds=30)
    settings.PORTAL_AGENT_HEARTBEAT_SECONDS = None
    assert agent_heartbeat_period() == timedelta(seconds=15)
    settings.PORTAL_AGENT_POLL_SECONDS = 90  # polls rarer than the threshold: every poll is recorded
    assert agent_heartbeat_period() == timedelta(0)


def test_a_heartbeat_period_longer_than_the_threshold_allows_is_refused_at_startup():
    env = {**os.environ, "PORTAL_AGENT_HEARTBEAT_SECONDS": "151", "SECRET_KEY": "x" * 60}
    result = subprocess.run(
        [sys.executable, "-c", "import portal.settings"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "PORTAL_AGENT_HEARTBEAT_SECONDS=151 must be at most" in result.stderr
    env["PORTAL_AGENT_HEARTBEAT_SECONDS"] = "150"
    ok = subprocess.run([sys.executable, "-c", "import portal.settings"], env=env, capture_output=True)
    assert ok.returncode == 0, ok.stderr


# --- Work is still found on the first poll ---------------------------------------------------------


def test_a_queued_job_is_still_claimed_on_the_first_poll(steady):
    agent, api = steady
    job = factories.JobFactory(agent=agent, client=factories.BackupClientFactory(agent=agent))
    assert [claimed["id"] for claimed in poll(api)["jobs"]] == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_a_job_not_due_yet_opens_no_transaction(steady):
    agent, api = steady
    factories.JobFactory(
        agent=agent,
        client=factories.BackupClientFactory(agent=agent),
        not_before=timezone.now() + timedelta(1),
    )
    with CaptureQueriesContext(connection) as captured:
        assert poll(api)["jobs"] == []
    assert writes(captured) == []


def test_a_running_job_missing_from_the_poll_is_still_reconciled(steady):
    agent, api = steady
    job = factories.JobFactory(
        agent=agent, kind=JobKind.BACKUP, client=factories.BackupClientFactory(agent=agent)
    )
    poll(api)  # handed out; the answer is lost
    poll(api, running=[])
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert Job.objects.filter(retry_of=job, state=JobState.QUEUED).exists()


# --- The poll's body: the fast path is the serializer ----------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {},
        body(),
        body(allow=None, instance=None, version="", running=[1, 2, 3]),
        body(allow={"paths": ["/a"], "other": None}, instance={**INSTANCE, "extra": 1}),
        {**body(), "a_newer_field": {"x": 1}},
    ],
)
def test_the_fast_path_returns_what_the_serializer_returns(data):
    serializer = PollSerializer(data=data)
    assert serializer.is_valid(), serializer.errors
    assert plain_poll(data) == dict(serializer.validated_data)


@pytest.mark.parametrize(
    "data",
    [
        body(version=" 0.2.0 "),  # trimmed by the serializer
        body(protocol="2"),  # coerced by the serializer
        body(running=["7"]),
        body(archives=[]),  # an archives report: the serializer's
        body(version="x" * 33),  # errors: the serializer's own
        body(protocol=True),
        body(plugins=["ftp"]),
        body(running=[0]),
        body(instance={"id": "not hex", "host": "h"}),
        body(instance={"id": "c" * 32, "host": ""}),
        body(allow=["/srv"]),
        body(version=None),
        [],
    ],
)
def test_anything_else_is_left_to_the_serializer(data):
    assert plain_poll(data) is None
    serializer = PollSerializer(data=data)
    if serializer.is_valid():
        assert validated_poll(data) == serializer.validated_data
    else:
        with pytest.raises(ValidationError) as refused:
            validated_poll(data)
        assert refused.value.detail == serializer.errors


def test_a_bad_poll_is_still_a_400_with_the_serializers_errors(steady):
    _, api = steady
    response = api.post(POLL, body(plugins=["ftp"], running=["x"]), format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"plugins", "running"}


# --- The poll's two doors: the short one (catalog.agent_api.views.poll) and DRF's (PollView) ----------


def _through_drf(agent: Agent, token: str, data) -> tuple[int, bytes]:
    """The same poll sent straight to PollView, DRF's door."""
    from rest_framework.test import APIRequestFactory

    from catalog.agent_api.views import PollView

    request = APIRequestFactory().post(POLL, data, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")
    response = PollView.as_view()(request)
    response.render()
    return response.status_code, response.content


def test_the_short_door_answers_byte_for_byte_as_drf_does(db):
    agent = factories.AgentFactory()
    api, token = agent_client(agent)
    poll(api)  # binds the instance
    client = factories.BackupClientFactory(agent=agent)
    # A job to hand out: its payload (dates, options, storage) is the part worth comparing.
    queued = Job.objects.create(kind=JobKind.BACKUP, client=client, agent=agent)
    moment = timezone.now()
    with mock.patch("django.utils.timezone.now", return_value=moment):  # the same lease in both answers
        short = api.post(POLL, body(), format="json")
        assert [job["id"] for job in short.json()["jobs"]] == [queued.pk]
        Job.objects.filter(pk=queued.pk).update(state=JobState.QUEUED, started_at=None, lease_expires_at=None)
        status, content = _through_drf(agent, token, body())
    assert (short.status_code, short.content) == (status, content)
    assert short["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "send, status, code",
    [
        ({"HTTP_AUTHORIZATION": "Bearer bpa_not-a-token"}, 401, "authentication_failed"),
        ({"HTTP_AUTHORIZATION": "Bearer two words"}, 401, "authentication_failed"),
        ({"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}, 401, "not_authenticated"),
        ({"body": b"{not json"}, 400, "parse_error"),
        ({"body": b'{"protocol": "2", "running": ["7"]}'}, 200, None),  # coerced by the serializer
        ({"content_type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_what_the_short_door_does_not_take_drf_answers(db, send, status, code):
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)
    poll(api)
    headers = {key: value for key, value in send.items() if key.startswith("HTTP_")}
    if headers:
        api.credentials(**headers)
    response = api.generic(
        "POST",
        POLL,
        send.get("body", json.dumps(body()).encode()),
        content_type=send.get("content_type", "application/json"),
    )
    assert response.status_code == status, response.content
    if code:
        assert response.json()["code"] == code


def test_a_second_instance_goes_to_drf_and_is_refused(db):
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)
    poll(api)  # bound to INSTANCE
    response = api.post(POLL, body(instance={"id": "d" * 32, "host": "clone.example.com"}), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "agent_cloned"
