"""The Celery app (PORTAL_TASK_BACKEND=celery): one generic task runs any task function.

Start a worker with ``celery -A portal worker`` and the periodic tasks with
``celery -A portal beat``; the schedule is the same list django-q2 uses.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("backup_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="portal.run_task")
def run_task(path: str, args: list, kwargs: dict):
    from core.queue import run

    return run(path, args, kwargs)


@app.on_after_finalize.connect
def _register_periodic_tasks(sender, **kwargs) -> None:
    from celery.schedules import crontab

    from core.periodic import PERIODIC_TASKS

    for task in PERIODIC_TASKS:
        minute, hour, day_of_month, month_of_year, day_of_week = task.cron.split()
        sender.add_periodic_task(
            crontab(minute, hour, day_of_week, day_of_month, month_of_year),
            run_task.s(task.func, [], {}),
            name=task.name,
        )
