"""The one list of periodic tasks, registered into django-q2 Schedules and Celery beat.

Each app's periodic functions live in its ``tasks.py``; the list names them by
dotted path, so core imports none of them.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

from django.apps import apps
from django.conf import settings


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
    PeriodicTask(
        "Remove file lists whose job never completed", "catalog.tasks.purge_incoming_file_lists", "50 * * * *"
    ),
    PeriodicTask("Queue due restore tests", "catalog.tasks.schedule_restore_tests", "30 4 * * *"),
    PeriodicTask("Forecast storage capacity", "catalog.tasks.forecast_capacity", "45 5 * * *"),
    PeriodicTask(
        "Check completed backups for anomalies missed", "catalog.tasks.check_anomalies", "*/15 * * * *"
    ),
    PeriodicTask("Mail unsent critical alerts", "catalog.tasks.mail_unsent_critical", "*/10 * * * *"),
    PeriodicTask("Mail the daily alert digest", "catalog.tasks.send_digests", "0 7 * * *"),
    PeriodicTask(
        "Reconcile restore requests with their jobs", "requests_app.tasks.reconcile_requests", "*/5 * * * *"
    ),
    PeriodicTask("Retry due webhook deliveries", "requests_app.tasks.retry_webhook_deliveries", "* * * * *"),
    PeriodicTask("Purge old webhook deliveries", "requests_app.tasks.purge_webhook_deliveries", "40 3 * * *"),
    PeriodicTask(
        "Purge idempotency keys older than 48 h", "requests_app.tasks.purge_idempotency_records", "20 3 * * *"
    ),
    PeriodicTask(
        "Generate last month's reports and mail chargebacks", "reports.tasks.generate_monthly", "0 5 1 * *"
    ),
    PeriodicTask(
        "Meter the database's commits (PostgreSQL)", "core.tasks.record_database_commits", "*/5 * * * *"
    ),
    PeriodicTask(
        "Re-check LDAP users' accounts and groups", "identity.tasks.recheck_directory_users", "*/5 * * * *"
    ),
)


def project_packages() -> set[str]:
    """The top-level packages whose functions are the project's: its own apps and the settings' package.

    An app is the project's own when its package sits at the top of the project
    directory (``BASE_DIR``), as catalog, requests_app, reports and core do.
    Installed packages (django_q, django, …) live in site-packages, which is never
    ours, even when a virtualenv sits inside the project directory.
    """
    base = Path(settings.BASE_DIR).resolve()
    site_dirs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    own = {settings.SETTINGS_MODULE.split(".")[0]}
    if base in site_dirs:
        return own  # installed as a package beside every other: no way to tell, so claim no app
    for config in apps.get_app_configs():
        if Path(config.path).resolve().parent == base:
            own.add(config.name.split(".")[0])
    return own
