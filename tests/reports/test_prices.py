"""Price history: what a policy cost on a day, and editing a policy's price keeps the old one."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.utils import timezone

from reports.models import PolicyPrice
from reports.prices import PriceBook
from reports.receivers import EPOCH

pytestmark = pytest.mark.django_db


def test_before_any_history_the_policy_price_applies(silver):
    book = PriceBook.load()

    assert book.price_on(silver.pk, date(2026, 10, 1)) == Decimal("0.0500")


def test_a_change_applies_from_its_day(gold):
    PolicyPrice.objects.create(
        policy=gold, effective_from=date(2026, 10, 16), price_per_gb_month=Decimal("0.18")
    )
    book = PriceBook.load()

    assert book.price_on(gold.pk, date(2026, 10, 15)) == Decimal("0.1200")
    assert book.price_on(gold.pk, date(2026, 10, 16)) == Decimal("0.18")


def test_editing_the_policy_price_records_the_old_and_the_new(silver):
    silver.price_per_gb_month = Decimal("0.0700")
    silver.save()

    history = list(PolicyPrice.objects.filter(policy=silver).order_by("effective_from"))
    assert [(p.effective_from, p.price_per_gb_month) for p in history] == [
        (EPOCH, Decimal("0.0500")),
        (timezone.localdate(), Decimal("0.0700")),
    ]
    book = PriceBook.load()
    assert book.price_on(silver.pk, date(2026, 1, 1)) == Decimal("0.0500")


def test_saving_a_policy_without_a_price_change_records_nothing(silver):
    silver.description = "Daily"
    silver.save()

    assert not PolicyPrice.objects.exists()
