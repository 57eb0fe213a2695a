"""/healthz: what a load balancer and the monitoring ask before sending traffic."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper

pytestmark = pytest.mark.django_db

# What psycopg2 says when PostgreSQL is down: it names the internal host, address and port.
DB_DOWN = (
    'connection to server at "db-internal.corp.example" (10.20.30.40), port 5432 failed: Connection refused'
)


def database_down():
    return mock.patch.object(CursorWrapper, "execute", side_effect=OperationalError(DB_DOWN))


def test_healthz_is_ok_when_database_and_queue_answer(client):
    response = client.get("/healthz", secure=True)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "queue": "ok"}
    assert "no-cache" in response["Cache-Control"]  # a cached "ok" would hide an outage


def test_healthz_is_503_when_the_database_fails(client):
    with database_down():
        response = client.get("/healthz", secure=True)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["database"].startswith("error")
    assert body["queue"] == "ok"


def test_healthz_is_503_when_the_task_queue_is_unreachable(client, monkeypatch):
    def broker_down():
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr("core.queue.ping", broker_down)
    response = client.get("/healthz", secure=True)
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("error", "ok")
    assert body["queue"].startswith("error")


def test_healthz_is_503_when_the_queue_ping_says_no(client, monkeypatch, settings):
    settings.PORTAL_TASK_BACKEND = "django_q"
    monkeypatch.setattr("django_q.brokers.orm.ORM.ping", lambda self: False)
    response = client.get("/healthz", secure=True)
    assert response.status_code == 503
    assert response.json()["status"] == "error"


def test_healthz_does_not_reveal_database_internals_to_anonymous_callers(client):
    """/healthz is public: the error text names internal hosts, addresses and users; it belongs in the log."""
    with database_down():
        response = client.get("/healthz", secure=True)
    assert response.status_code == 503
    assert "10.20.30.40" not in response.content.decode()
    assert "db-internal" not in response.content.decode()


def test_healthz_answers_the_load_balancers_plain_http_probe_in_production(client, settings):
    """TLS ends at the load balancer, whose probe speaks plain HTTP to gunicorn without
    X-Forwarded-Proto; a 301 to https:// there marks every instance unhealthy."""
    settings.SECURE_SSL_REDIRECT = True  # as in production (DEBUG=false)
    response = client.get("/healthz")
    assert response.status_code == 200
    # Everything else is still redirected.
    assert client.get("/admin/login/").status_code == 301
