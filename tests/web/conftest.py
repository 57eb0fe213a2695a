"""The estate the web tests share: ``owner``'s application ``app`` and ``other_owner``'s ``other_app``,
each with an agent, a protected client and a recent recovery point."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.cache import cache

from catalog.choices import Plugin
from catalog.models import Agent, Backup, BackupClient
from tests import factories


@dataclass
class Estate:
    agent: Agent
    client: BackupClient
    backup: Backup


def build_estate(application, *, plugin: str = Plugin.FILES, options: dict | None = None) -> Estate:
    agent = factories.AgentFactory(applications=[application])
    client = factories.BackupClientFactory(
        application=application,
        agent=agent,
        plugin=plugin,
        options=options or {"paths": ["/srv/data"]},
    )
    return Estate(agent=agent, client=client, backup=factories.BackupFactory(client=client))


@pytest.fixture(autouse=True)
def _fresh_throttle():
    # Login failures are counted in the cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def mine(app) -> Estate:
    return build_estate(app)


@pytest.fixture
def theirs(other_app) -> Estate:
    return build_estate(other_app)


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def other_client(client, other_owner):
    client.force_login(other_owner)
    return client


@pytest.fixture
def auto_policy(db):
    return factories.ProtectionPolicyFactory(name="Silver", auto_approve_clients=True)


@pytest.fixture
def manual_policy(db):
    return factories.ProtectionPolicyFactory(name="Gold", auto_approve_clients=False)
