"""The estate the API tests share, and callers: an API key per persona, or a signed-in session.

``owner`` owns ``app`` (estate ``mine``), ``other_owner`` owns ``other_app``
(estate ``theirs``), ``backup_admin`` is the backup team.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from requests_app.models import ApiKey
from tests import factories
from tests.web.conftest import Estate, build_estate


def key_client(user, name: str = "ServiceNow") -> APIClient:
    """A client that authenticates as an integration acting for ``user``; ``.api_key`` is the row."""
    api_key, key = ApiKey.issue(user=user, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.api_key = api_key
    client.key = key
    return client


@pytest.fixture(autouse=True)
def _fresh_throttle():
    # Throttle counters live in the cache, which outlives a test.
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
def owner_api(owner) -> APIClient:
    return key_client(owner)


@pytest.fixture
def other_api(other_owner) -> APIClient:
    return key_client(other_owner, name="Jira")


@pytest.fixture
def admin_api(backup_admin) -> APIClient:
    return key_client(backup_admin, name="Team automation")


@pytest.fixture
def second_admin(backup_team_group):
    user = factories.UserFactory(username="second_admin", is_staff=True)
    user.groups.add(backup_team_group)
    return user


@pytest.fixture
def second_admin_api(second_admin) -> APIClient:
    return key_client(second_admin, name="Second team automation")


@pytest.fixture
def auto_policy(db):
    return factories.ProtectionPolicyFactory(name="Silver", auto_approve_clients=True)


@pytest.fixture
def manual_policy(db):
    return factories.ProtectionPolicyFactory(name="Gold", auto_approve_clients=False)
