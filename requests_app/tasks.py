"""Background tasks of the request workflow: every periodic and queued one (run through core.queue).

Thin: the work is in requests_app.services, requests_app.webhooks and
requests_app.api.idempotency. Tasks take ids and do nothing for a row that is gone.
"""

from __future__ import annotations

import logging

from catalog.choices import JobState
from requests_app import notify, services
from requests_app.api import idempotency
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest, WebhookDelivery
from requests_app.webhooks import delivery, dispatch

log = logging.getLogger(__name__)

_MODELS = {"client": ClientRequest, "restore": RestoreRequest}


def announce(kind: str, pk: int, previous: str, status: str) -> None:
    """Tell the integrations (webhooks) and people (mail) that a request changed state."""
    request = _MODELS[kind].objects.select_related("requester").filter(pk=pk).first()
    if request is None:
        return  # gone since: nothing to announce
    # Webhooks first: they are rows, and survive a mail server that is down.
    dispatch.request_changed(kind, pk, previous, status)
    notify.request_changed(request, previous, status)


def reconcile_requests() -> int:
    """Catch up restore requests whose job finished while the follower missed it (a crash after commit)."""
    stale = RestoreRequest.objects.filter(
        status__in=(RequestStatus.APPROVED, RequestStatus.RUNNING),
        job__state__in=(JobState.RUNNING, *JobState.terminal()),
    ).values_list("job_id", flat=True)[:500]
    fixed = 0
    for job_id in stale:
        before = RestoreRequest.objects.get(job_id=job_id).status
        after = services.follow_job(job_id)
        fixed += after is not None and after.status != before
    if fixed:
        log.warning("reconciled %d restore request(s) with their jobs", fixed)
    return fixed


# --- Webhooks -------------------------------------------------------------------------------


def dispatch_job_changed(
    job_id: int, previous_state: str, state: str, occurred_at: str | None = None
) -> list[WebhookDelivery]:
    """The deliveries of a job's change of state (enqueued by the job_changed receiver)."""
    return dispatch.job_changed(job_id, previous_state, state, occurred_at)


def dispatch_alert_raised(alert_id: int) -> list[WebhookDelivery]:
    """The deliveries of a raised alert (enqueued by the alert_raised receiver); none if it is gone."""
    return dispatch.alert_raised(alert_id)


def deliver_webhook(delivery_id: str) -> bool | None:
    """Send one delivery if it is due and nobody else is sending it; True if it was delivered."""
    return delivery.deliver(delivery_id)


def retry_webhook_deliveries() -> int:
    """Every minute: send the pending deliveries whose next attempt is due."""
    return delivery.retry_due()


def purge_webhook_deliveries() -> int:
    """Daily: forget finished deliveries past their keeping time."""
    return delivery.purge()


# --- The API --------------------------------------------------------------------------------


def purge_idempotency_records() -> int:
    """Daily: forget the answers to Idempotency-Keys past their retention."""
    return idempotency.purge_idempotency_records()
