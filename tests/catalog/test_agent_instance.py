"""One agent, one host: the token is bound to the instance that enrolled (issue #12, item 4)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from catalog.choices import AlertKind, AlertSeverity
from catalog.models import Agent, Alert
from catalog.services import agents
from tests import factories
from tests.helpers import agent_client

ORIGINAL = {"id": "a" * 32, "host": "db01.example.com"}
CLONE = {"id": "b" * 32, "host": "db01-copy.example.com"}


def poll(api, instance=None):
    body = {"version": "0.2.0", "plugins": ["files"], "running": []}
    if instance is not None:
        body["instance"] = instance
    return api.post("/api/agent/v1/poll", body, format="json")


def enrol(token: str, instance=None):
    body = {"token": token, "hostname": "db01.example.com", "version": "0.2.0", "plugins": ["files"]}
    if instance is not None:
        body["instance"] = instance
    return APIClient().post("/api/agent/v1/enrol", body, format="json")


@pytest.fixture
def enrolled(app):
    _, token = agents.issue_enrolment_token(application=app, hostname="db01.example.com")
    response = enrol(token, ORIGINAL)
    assert response.status_code == 201, response.content
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['agent_token']}")
    return Agent.objects.get(hostname="db01.example.com"), api


def test_enrol_binds_the_instance(enrolled):
    agent, _ = enrolled
    assert (agent.instance_id, agent.instance_host) == (ORIGINAL["id"], ORIGINAL["host"])


def test_a_second_instance_is_refused_and_raises_one_alert_the_bound_one_keeps_working(enrolled):
    agent, api = enrolled

    for _ in range(3):
        response = poll(api, CLONE)
        assert response.status_code == 409
        assert response.json()["code"] == "agent_cloned"
        assert ORIGINAL["host"] in response.json()["detail"]
        assert CLONE["host"] in response.json()["detail"]

    alert = Alert.objects.get(kind=AlertKind.AGENT_CLONED)
    assert (alert.severity, alert.agent_id, alert.resolved_at) == (AlertSeverity.CRITICAL, agent.pk, None)
    assert ORIGINAL["host"] in alert.message and CLONE["host"] in alert.message
    assert poll(api, ORIGINAL).status_code == 200
    assert poll(api).status_code == 200  # an older agent's poll, without instance
    agent.refresh_from_db()
    assert agent.instance_id == ORIGINAL["id"]


def test_an_unbound_agent_binds_on_its_first_poll_with_an_instance(db):
    agent = factories.AgentFactory()
    api, _ = agent_client(agent)
    assert poll(api).status_code == 200
    assert poll(api, ORIGINAL).status_code == 200
    agent.refresh_from_db()
    assert agent.instance_id == ORIGINAL["id"]
    assert poll(api, CLONE).status_code == 409


def test_the_steady_state_poll_writes_nothing_for_the_instance(enrolled, django_assert_max_num_queries):
    _, api = enrolled
    with django_assert_max_num_queries(7) as captured:
        assert poll(api, ORIGINAL).status_code == 200
    updates = [q["sql"] for q in captured.captured_queries if q["sql"].startswith('UPDATE "catalog_agent"')]
    # Nothing changed since the enrolment, not even the heartbeat (tests/catalog/test_idle_poll.py).
    assert updates == []


def test_a_malformed_instance_is_a_400(enrolled):
    _, api = enrolled
    assert poll(api, {"id": "not hex", "host": "x"}).status_code == 400


def test_rekey_rebinds_to_the_enrolling_instance_and_closes_the_alert(enrolled, backup_admin):
    agent, api = enrolled
    poll(api, CLONE)
    _, token = agents.issue_rekey_token(agent, created_by=backup_admin)

    response = enrol(token, CLONE)

    assert response.status_code == 201, response.content
    agent.refresh_from_db()
    assert (agent.instance_id, agent.instance_host) == (CLONE["id"], CLONE["host"])
    assert not Alert.objects.filter(kind=AlertKind.AGENT_CLONED, resolved_at__isnull=True).exists()
    rekeyed = APIClient()
    rekeyed.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['agent_token']}")
    assert poll(rekeyed, CLONE).status_code == 200
    assert poll(rekeyed, ORIGINAL).status_code == 409
