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
    PeriodicTask(
        "Reconcile restore requests with their jobs", "requests_app.tasks.reconcile_requests", "*/5 * * * *"
    ),
)
