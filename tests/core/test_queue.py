"""The task-queue seam: sent after commit, typos caught at the call, run by the worker."""

from __future__ import annotations

import pytest
from django.db import transaction

from core import queue


def test_enqueue_waits_for_the_commit(db, monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(queue, "_send", lambda path, args, kwargs: sent.append((path, args, kwargs)))

    with django_capture_on_commit_callbacks(execute=True):
        queue.enqueue("catalog.tasks.schedule_backups")
        assert sent == []  # a worker must not look for rows that are not committed yet
    assert sent == [("catalog.tasks.schedule_backups", (), {})]


def test_enqueue_in_a_rolled_back_transaction_sends_nothing(db, monkeypatch):
    sent = []
    monkeypatch.setattr(queue, "_send", lambda *a: sent.append(a))
    with pytest.raises(RuntimeError), transaction.atomic():
        queue.enqueue("catalog.tasks.schedule_backups")
        raise RuntimeError("the request failed")
    assert sent == []


def test_enqueue_refuses_an_unknown_task_at_the_call(db):
    with pytest.raises(ImportError):
        queue.enqueue("catalog.tasks.no_such_task")


def test_django_q_backend_runs_the_task_function(db, settings, django_capture_on_commit_callbacks):
    # Tests run django-q2 in sync mode; the real broker and cluster are in tests/e2e.
    from datetime import timedelta

    from django.utils import timezone

    from catalog.models import Alert
    from tests import factories

    settings.PORTAL_TASK_BACKEND = "django_q"
    factories.AgentFactory(last_seen_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        queue.enqueue("catalog.tasks.watch_agents")
    assert Alert.objects.filter(kind="agent_silent").count() == 1
