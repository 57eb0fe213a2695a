"""The task-queue seam: one ``enqueue()`` for django-q2 (embedded default) or Celery.

Task functions are plain functions named by dotted path. They are sent only
after the surrounding transaction commits, so a worker never looks for a row
that is not there yet, and a rolled-back request enqueues nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)


def dotted_path(func: Callable | str) -> str:
    if isinstance(func, str):
        return func
    return f"{func.__module__}.{func.__qualname__}"


def enqueue(func: Callable | str, *args, **kwargs) -> None:
    """Run ``func(*args, **kwargs)`` on a worker once the current transaction commits."""
    path = dotted_path(func)
    import_string(path)  # fail here, in the caller, on a typo, not later in a worker
    transaction.on_commit(lambda: _send(path, args, kwargs))


def _send(path: str, args: tuple, kwargs: dict) -> None:
    if settings.PORTAL_TASK_BACKEND == "celery":
        # The project's Celery app, imported only when it is the backend: django-q2 set-ups never load Celery.
        from portal.celery import run_task

        run_task.delay(path, list(args), kwargs)
    else:
        from django_q.tasks import async_task

        async_task(path, *args, **kwargs)
    log.debug("enqueued %s", path)


def run(path: str, args: list | tuple = (), kwargs: dict | None = None):
    """What a Celery worker runs: the task function by dotted path; then a tick of the usage meter."""
    from core import usage  # its models load with the apps, not with this module

    try:
        return import_string(path)(*args, **(kwargs or {}))
    finally:
        usage.task_tick()


def ping() -> None:
    """Raise if the task broker is unreachable (for /healthz)."""
    if settings.PORTAL_TASK_BACKEND == "celery":
        from portal.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    else:
        from django_q.brokers import get_broker

        if not get_broker().ping():
            raise ConnectionError("django-q broker did not answer")
