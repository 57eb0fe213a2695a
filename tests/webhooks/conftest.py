"""Fixtures: a running receiver (tests/webhooks/receiver.py), a closed port, and subscriptions."""

from __future__ import annotations

import socket

import pytest

from tests.webhooks.receiver import SECRET, Receiver


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def closed_port_url() -> str:
    """A URL on which nothing listens: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"


@pytest.fixture
def subscribe(db):
    """Make a subscription (the backup team's unless ``api_key`` is given)."""
    from requests_app.models import WebhookSubscription

    def make(url: str, **fields) -> WebhookSubscription:
        fields.setdefault("name", "ServiceNow")
        fields.setdefault("secret", SECRET)
        return WebhookSubscription.objects.create(url=url, **fields)

    return make


@pytest.fixture
def team_subscription(subscribe, receiver):
    return subscribe(receiver.url)
