"""Watches that turn silent trouble into one alert per condition, closed when it clears.

Each watch raises at most one open alert per key (the partial unique
constraint on Alert.key), so running it every 15 minutes never floods.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from catalog import protection
from catalog.choices import AlertKind, AlertSeverity, ClientStatus, JobKind, JobState
from catalog.formatting import human_age
from catalog.models import Alert, Backup, BackupClient, Job, ProtectionPolicy, StorageTarget
from catalog.services import alerts

STORAGE_NEARLY_FULL = 0.85


def _open_alert_clients(kind: str):
    return Alert.objects.open().filter(kind=kind).values("client_id")


def watch_rpo(*, now: datetime | None = None) -> int:
    """Alert once per client whose last good backup is older than its policy's RPO.

    The rule is ``catalog.protection.with_rpo``'s, the one the dashboard shows; a
    client younger than its RPO has not had the chance to breach it yet.
    """
    now = now or timezone.now()
    raised = 0
    breached = (
        protection.with_rpo(BackupClient.objects.filter(status=ClientStatus.ACTIVE), now)
        .filter(protection.rpo_breached_q())
        .exclude(pk__in=_open_alert_clients(AlertKind.RPO_BREACHED))
        .select_related("application", "policy")
    )
    for client in breached:
        alert = alerts.raise_client_alert(
            AlertKind.RPO_BREACHED,
            AlertSeverity.CRITICAL,
            client,
            f"{client} has no good backup within its RPO of {client.policy.rpo_hours} h "
            f"(last good backup: {human_age(client.last_good_at, now)}).",
        )
        raised += alert is not None
    return raised


def watch_restore_tests(*, now: datetime | None = None) -> int:
    """Alert once per client with no passed restore test within its interval (plus a day's grace)."""
    now = now or timezone.now()
    raised = 0
    for policy in ProtectionPolicy.objects.all():
        cutoff = now - timedelta(days=policy.restore_test_interval_days + 1)
        tested = Job.objects.filter(
            kind=JobKind.RESTORE_TEST, state=JobState.SUCCEEDED, finished_at__gte=cutoff
        ).values("client_id")
        overdue = (
            BackupClient.objects.filter(policy=policy, status=ClientStatus.ACTIVE, created_at__lt=cutoff)
            .exclude(pk__in=tested)
            .exclude(pk__in=_open_alert_clients(AlertKind.RESTORE_TEST_OVERDUE))
            .select_related("application")
        )
        for client in overdue:
            alert = alerts.raise_client_alert(
                AlertKind.RESTORE_TEST_OVERDUE,
                AlertSeverity.WARNING,
                client,
                f"{client} has had no successful restore test in {policy.restore_test_interval_days} days.",
                link_agent=False,
            )
            raised += alert is not None
    return raised


def watch_storage(*, now: datetime | None = None) -> int:
    """Recount what each target holds; alert once above 85 % full, close the alert below it."""
    held = (
        Backup.objects.stored()
        .values("storage_target_id")
        .annotate(total=Sum("stored_size_bytes"))
    )
    used = {row["storage_target_id"]: row["total"] for row in held}
    raised = 0
    for target in StorageTarget.objects.all():
        target.used_bytes = used.get(target.pk, 0)
        StorageTarget.objects.filter(pk=target.pk).update(used_bytes=target.used_bytes)
        key = alerts.target_key(AlertKind.STORAGE_NEARLY_FULL, target.pk)
        if target.used_fraction < STORAGE_NEARLY_FULL:
            alerts.resolve_alerts(key)
            continue
        alert = alerts.raise_alert(
            kind=AlertKind.STORAGE_NEARLY_FULL,
            severity=AlertSeverity.CRITICAL if target.used_fraction >= 0.95 else AlertSeverity.WARNING,
            key=key,
            message=f"Storage target {target.name} is {target.used_fraction:.0%} full.",
            storage_target=target,
        )
        raised += alert is not None
    return raised
