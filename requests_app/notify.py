"""E-mail about requests: the requester on every change, the backup team when work waits for them."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from catalog.notify import backup_team_addresses
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest
from requests_app.services import may_issue_enrolment


def request_changed(request: ClientRequest | RestoreRequest, previous: str, status: str) -> int:
    """Send the mails for one transition; returns how many were sent."""
    context = {
        "request": request,
        "previous": previous,
        "status": status,
        "base_url": settings.PORTAL_BASE_URL,
        # The requester's next step, decided where the request page decides it.
        "enrol_next": isinstance(request, ClientRequest) and may_issue_enrolment(request, request.requester),
    }
    sent = 0
    if request.requester.email:
        subject = f"[Backup Portal] {request}: {RequestStatus(status).label.lower()}"
        body = render_to_string("requests_app/email/request_changed.txt", context)
        sent += send_mail(subject, body, None, [request.requester.email])
    waiting_for_team = status == RequestStatus.SUBMITTED and request.needs_approval
    if waiting_for_team:
        subject = f"[Backup Portal] Waiting for approval: {request}"
        body = render_to_string("requests_app/email/needs_approval.txt", context)
        sent += send_mail(subject, body, None, backup_team_addresses())
    return sent
