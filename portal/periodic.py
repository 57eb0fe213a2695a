"""The one list of periodic tasks, registered into django-q2 Schedules and Celery beat."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    func: str
    cron: str  # five fields, UTC


PERIODIC_TASKS: tuple[PeriodicTask, ...] = (
    PeriodicTask("Queue due backups", "catalog.tasks.schedule_backups", "* * * * *"),
    PeriodicTask("Reap expired job leases", "catalog.tasks.reap_leases", "* * * * *"),
    PeriodicTask("Watch for silent agents", "catalog.tasks.watch_agents", "*/5 * * * *"),
    PeriodicTask("Watch RPO, restore tests and storage", "catalog.tasks.watch_protection", "*/15 * * * *"),
    PeriodicTask("Expire backups past retention", "catalog.tasks.expire_backups", "10 * * * *"),
    PeriodicTask("Queue due restore tests", "catalog.tasks.schedule_restore_tests", "30 4 * * *"),
    PeriodicTask(
        "Reconcile restore requests with their jobs", "requests_app.tasks.reconcile_requests", "*/5 * * * *"
    ),
    PeriodicTask("Retry due webhook deliveries", "requests_app.webhooks.delivery.retry_due", "* * * * *"),
    PeriodicTask("Purge old webhook deliveries", "requests_app.webhooks.delivery.purge", "40 3 * * *"),
    PeriodicTask("Mail unsent critical alerts", "catalog.alert_tasks.mail_unsent_critical", "*/10 * * * *"),
    PeriodicTask("Mail the daily alert digest", "catalog.alert_tasks.send_digests", "0 7 * * *"),
    PeriodicTask(
        "Purge idempotency keys older than 48 h",
        "requests_app.api.idempotency.purge_idempotency_records",
        "20 3 * * *",
    ),
    PeriodicTask(
        "Generate last month's reports and mail chargebacks", "reports.tasks.generate_monthly", "0 5 1 * *"
    ),
)
