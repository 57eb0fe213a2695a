"""The catalog's announcements → webhook dispatch. Thin, and cheap when nobody subscribes.

These run in whatever committed the change — often an agent's report — so they
only ask whether any subscription wants the event and, if one does, hand the
work (loading, tenancy, the body, the deliveries) to a task.
"""

from __future__ import annotations

from django.utils import timezone

from catalog.signals import alert_raised, job_changed
from core.queue import enqueue
from requests_app.webhooks import Event, dispatch


def on_job_changed(sender, *, job_id: int, previous_state: str, state: str, **kwargs) -> None:
    if dispatch.anyone_wants(Event.JOB_CHANGED):
        occurred_at = timezone.now().isoformat()
        enqueue("requests_app.tasks.dispatch_job_changed", job_id, previous_state, state, occurred_at)


def on_alert_raised(sender, *, alert_id: int, **kwargs) -> None:
    if dispatch.anyone_wants(Event.ALERT_RAISED):
        enqueue("requests_app.tasks.dispatch_alert_raised", alert_id)


def connect() -> None:
    job_changed.connect(on_job_changed, dispatch_uid="requests_app.webhooks.job_changed")
    alert_raised.connect(on_alert_raised, dispatch_uid="requests_app.webhooks.alert_raised")
