"""The daily ``forecast_capacity`` task: one "full soon" alert per target, escalated, then resolved."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog import tasks
from catalog.choices import AlertKind, AlertSeverity
from catalog.models import Alert, StorageTarget
from catalog.services import capacity
from tests.catalog.capacity_helpers import GB, TB, filling_target

pytestmark = pytest.mark.django_db



def open_alerts():
    return list(Alert.objects.open().filter(kind=AlertKind.STORAGE_FULL_SOON))


def test_raises_once_with_the_figures_in_words(settings):
    settings.PORTAL_CAPACITY_ALERT_DAYS = 60
    storage = filling_target(capacity_bytes=int(5.05 * TB))  # 2.1 + 0.1 d ≥ 5.05 on day 30

    assert tasks.forecast_capacity() == 1
    assert tasks.forecast_capacity() == 0

    (alert,) = open_alerts()
    assert alert.key == f"storage_full_soon:target:{storage.pk}"
    assert alert.storage_target == storage
    assert alert.severity == AlertSeverity.WARNING
    full_on = timezone.localdate() + timedelta(days=30)
    assert alert.message == (
        f"backup-nfs-1 is forecast to be full on {full_on.isoformat()}, in 30 days: 2.1 TB used of 5 TB, "
        "+100 GB/day arriving, 0 B/day expiring."
    )


def test_not_within_the_alert_days_raises_nothing(settings):
    settings.PORTAL_CAPACITY_ALERT_DAYS = 20
    filling_target(capacity_bytes=int(5.05 * TB))

    assert tasks.forecast_capacity() == 0
    assert open_alerts() == []


def test_escalates_to_critical_in_the_last_two_weeks_and_resolves_when_capacity_is_added(settings):
    settings.PORTAL_CAPACITY_ALERT_DAYS = 60
    storage = filling_target(capacity_bytes=int(5.05 * TB))
    tasks.forecast_capacity()

    StorageTarget.objects.filter(pk=storage.pk).update(capacity_bytes=int(3.05 * TB))  # day 10
    assert tasks.forecast_capacity() == 1
    (alert,) = open_alerts()
    assert alert.severity == AlertSeverity.CRITICAL
    assert Alert.objects.filter(kind=AlertKind.STORAGE_FULL_SOON).count() == 2

    StorageTarget.objects.filter(pk=storage.pk).update(capacity_bytes=100 * TB)
    assert tasks.forecast_capacity() == 0
    assert open_alerts() == []
    assert capacity.forecast(StorageTarget.objects.get(pk=storage.pk)).full_on is None


def test_decimal_sizes_read_like_a_price_list():
    assert capacity.decimal_size(41.2 * TB) == "41.2 TB"
    assert capacity.decimal_size(50 * TB) == "50 TB"
    assert capacity.decimal_size(180 * GB) == "180 GB"
    assert capacity.decimal_size(512) == "512 B"
