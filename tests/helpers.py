"""Helpers the test folders share that are neither fixtures nor data builders."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from requests_app.models import ApiKey


def key_client(user, name: str = "ServiceNow") -> APIClient:
    """A client that authenticates as an integration acting for ``user``; ``.api_key`` is the row."""
    api_key, key = ApiKey.issue(user=user, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.api_key = api_key
    client.key = key
    return client


def agent_client(agent) -> tuple[APIClient, str]:
    """A client that speaks for ``agent`` with a fresh token (the token returned too)."""
    token = agent.issue_token()
    agent.save()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api, token


def wait_for(predicate: Callable[[], object], *, timeout: float = 30, what: str = "condition") -> object:
    """Poll ``predicate`` until it is true (and return its value); fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
