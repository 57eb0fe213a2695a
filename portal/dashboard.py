"""The application owners' dashboard: every application's protection at a glance, and my open requests.

The page costs a constant number of queries however many applications, clients,
jobs and backups there are: one annotated query for the applications (see
``catalog.protection``), one count of the alerts waiting for somebody, and one
per request kind. The backup team also gets the automation panel
(``portal.metrics``: four more queries).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from catalog.models import Application
from catalog.protection import annotate_applications, count_of
from catalog.tenancy import is_backup_team
from portal import metrics
from portal.alerts_views import open_unacknowledged_count
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest
from requests_app.views import my_open_requests

MY_OPEN_REQUESTS_SHOWN = 10


@dataclass(frozen=True)
class Health:
    tone: str
    label: str


def application_health(application) -> Health:
    """In words, from the annotations: protected, RPO missed, or nothing active to protect."""
    if not application.active_clients:
        return Health("neutral", "No active clients")
    if application.rpo_breaches:
        if application.active_clients == 1:
            return Health("fail", "RPO missed")
        return Health(
            "fail", f"RPO missed on {application.rpo_breaches} of {application.active_clients} clients"
        )
    return Health("ok", "RPO met" if application.active_clients == 1 else "All clients meet RPO")


def dashboard_applications(user, now):
    open_status = RequestStatus.open()
    client_requests = ClientRequest.objects.filter(application=OuterRef("pk"), status__in=open_status)
    restore_requests = RestoreRequest.objects.filter(
        backup__client__application=OuterRef("pk"), status__in=open_status
    )
    return annotate_applications(Application.objects.visible_to(user), now).annotate(
        open_requests=count_of(client_requests) + count_of(restore_requests)
    )


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    applications = list(dashboard_applications(request.user, now))
    for application in applications:
        application.health = application_health(application)
    summary = {
        "applications": len(applications),
        "clients": sum(a.client_count for a in applications),
        "breaches": sum(a.rpo_breaches for a in applications),
        "failures": sum(a.failures_recent for a in applications),
        "open_requests": sum(a.open_requests for a in applications),
        "alerts": open_unacknowledged_count(request.user),
    }
    mine, more = my_open_requests(request.user, limit=MY_OPEN_REQUESTS_SHOWN)
    context = {"applications": applications, "summary": summary, "my_requests": mine, "more_requests": more}
    if is_backup_team(request.user):
        context["automation"] = metrics.weekly(now=now)
    return render(request, "portal/dashboard.html", context)
