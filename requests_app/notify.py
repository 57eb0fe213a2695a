"""E-mail about requests: the requester on every change, the backup team when work waits for them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.template.loader import render_to_string

from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest


def backup_team_addresses() -> list[str]:
    users = (
        get_user_model()
        .objects.filter(groups__name=settings.PORTAL_BACKUP_TEAM_GROUP, is_active=True)
        .exclude(email="")
    )
    addresses = {settings.PORTAL_BACKUP_TEAM_EMAIL, *users.values_list("email", flat=True)}
    return sorted(a for a in addresses if a)


def request_changed(request: ClientRequest | RestoreRequest, previous: str, status: str) -> int:
    """Send the mails for one transition; returns how many were sent."""
    context = {
        "request": request,
        "previous": previous,
        "status": status,
        "base_url": settings.PORTAL_BASE_URL,
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
