"""Keep the price history when a policy's price is edited (wired in ``ReportsConfig.ready``).

Without it, editing ``price_per_gb_month`` would silently reprice every month
already billed. The old price is kept as the price until yesterday (from the
beginning, if the policy had no history yet), the new one from today.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from catalog.models import ProtectionPolicy
from reports.models import PolicyPrice

#: The "from the beginning" of a price that was never changed before.
EPOCH = date(2000, 1, 1)


@receiver(pre_save, sender=ProtectionPolicy, dispatch_uid="reports.remember_old_price")
def remember_old_price(sender, instance: ProtectionPolicy, raw: bool = False, **kwargs) -> None:
    instance._price_before = None
    if raw or instance.pk is None:
        return
    instance._price_before = (
        ProtectionPolicy.objects.filter(pk=instance.pk).values_list("price_per_gb_month", flat=True).first()
    )


@receiver(post_save, sender=ProtectionPolicy, dispatch_uid="reports.record_price_change")
def record_price_change(
    sender, instance: ProtectionPolicy, created: bool, raw: bool = False, **kwargs
) -> None:
    old = getattr(instance, "_price_before", None)
    if raw or created or old is None or old == instance.price_per_gb_month:
        return
    today = timezone.localdate()
    if not PolicyPrice.objects.filter(policy=instance, effective_from__lt=today).exists():
        PolicyPrice.objects.get_or_create(
            policy=instance,
            effective_from=min(EPOCH, today - timedelta(days=1)),
            defaults={"price_per_gb_month": old, "note": "Price before the first recorded change."},
        )
    PolicyPrice.objects.update_or_create(
        policy=instance,
        effective_from=today,
        defaults={"price_per_gb_month": instance.price_per_gb_month, "note": "Changed on the policy."},
    )
