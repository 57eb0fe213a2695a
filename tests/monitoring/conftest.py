"""What the /metrics tests share: a configured token, a scrape through the public door, a parser."""

from __future__ import annotations

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "metrics-test-token-0123456789abcdef"  # noqa: S105


@pytest.fixture
def metrics_token(settings):
    """/metrics opened by a bearer token only (no address allow-list)."""
    settings.PORTAL_METRICS_TOKEN = TOKEN
    settings.PORTAL_METRICS_ALLOW = []
    return TOKEN


def scrape(client, token: str | None = TOKEN, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.get("/metrics", **headers, **extra)


def families(response) -> dict[str, Metric]:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def samples(family: Metric) -> dict[tuple, float]:
    """``{(sorted label pairs): value}`` of a family's plain samples (no _bucket/_sum/_count)."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples
        if sample.name == family.name
    }
