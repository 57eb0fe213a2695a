"""Callers of the API tests: an API key per persona.

``owner`` owns ``app`` (estate ``mine``), ``other_owner`` owns ``other_app``
(estate ``theirs``), ``backup_admin`` and ``second_admin`` are the backup team:
personas, estates and policies are in tests/conftest.py, ``key_client`` in tests/helpers.py.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.helpers import key_client


@pytest.fixture(autouse=True)
def _fresh_throttle(fresh_cache):
    """Throttle counters live in the cache, which outlives a test."""


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
def second_admin_api(second_admin) -> APIClient:
    return key_client(second_admin, name="Second team automation")
