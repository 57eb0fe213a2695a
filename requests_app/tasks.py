"""Background tasks of the request workflow (run through portal.queue)."""

from __future__ import annotations

import logging

from catalog.choices import JobState
from requests_app import notify, services
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest
from requests_app.webhooks import dispatch

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
