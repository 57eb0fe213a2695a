"""The storage targets' admin shows the capacity forecast: a "full in" column and the words on the form."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests import factories
from tests.catalog.capacity_helpers import filling_target

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:catalog_storagetarget_changelist")


def test_changelist_shows_full_in(root_client):
    filling_target(name="backup-nfs-1")
    filling_target(name="roomy", capacity_bytes=10**15)
    factories.StorageTargetFactory(name="new-target")

    response = root_client.get(CHANGELIST)

    assert response.status_code == 200
    text = response.text
    assert "full in" in text.lower()
    assert "30\N{NO-BREAK SPACE}days" in text
    assert "&gt;\N{NO-BREAK SPACE}2\N{NO-BREAK SPACE}years" in text
    assert "no backup stored yet" in text  # the reason, as the dash's tooltip


def test_changelist_costs_the_same_queries_for_1_or_6_targets(root_client):
    filling_target(name="t0")
    root_client.get(CHANGELIST)  # warm the session and content types
    with CaptureQueriesContext(connection) as few:
        assert root_client.get(CHANGELIST).status_code == 200
    for n in range(1, 6):
        filling_target(name=f"t{n}")
    with CaptureQueriesContext(connection) as many:
        assert root_client.get(CHANGELIST).status_code == 200

    assert len(many) == len(few)


def test_change_form_says_when_and_why(root_client):
    storage = filling_target(name="backup-nfs-1")

    response = root_client.get(reverse("admin:catalog_storagetarget_change", args=[storage.pk]))

    assert response.status_code == 200
    full_on = timezone.localdate() + timedelta(days=30)
    assert f"backup-nfs-1 is forecast to be full on {full_on.isoformat()}, in 30 days" in response.text
    assert "2.1 TB used of 5 TB" in response.text
