"""The builders aggregate in the database: the same number of queries for 2 clients or 20."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.choices import JobKind, JobState
from reports import builders
from tests import factories
from tests.reports.builders import OCTOBER, at, backup, job

pytestmark = pytest.mark.django_db


def add_clients(app, policy, n: int) -> None:
    for _ in range(n):
        client = factories.BackupClientFactory(application=app, policy=policy, created_at=at(9, 1))
        backup(client, at(10, 3), 2)
        job(client, JobKind.RESTORE_TEST, at(10, 4), state=JobState.SUCCEEDED)
        factories.AlertFactory(client=client, severity="critical", created_at=at(10, 5))


@pytest.mark.parametrize("kind", ["chargeback", "compliance", "operations"])
def test_query_count_does_not_grow_with_the_clients(kind, app, other_app, silver, gold):
    add_clients(app, silver, 2)
    with CaptureQueriesContext(connection) as few:
        builders.build(kind, OCTOBER, now=at(11, 26))
    add_clients(other_app, gold, 18)
    with CaptureQueriesContext(connection) as many:
        builders.build(kind, OCTOBER, now=at(11, 26))

    assert len(many) == len(few)
    assert len(few) <= 12
