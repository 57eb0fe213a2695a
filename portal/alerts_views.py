"""The portal's alert page: the alerts a person may see, open ones first, and acknowledging them.

Tenancy is the queryset's: both views start from ``Alert.objects.visible_to``,
so another application's alert is a 404, listed or posted to. The list costs
the same five queries whatever the number of alerts: session, user, the
backup-team check, the count and one page of rows with their relations joined.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from catalog.models import Alert
from catalog.services import alerts as alert_service

ALERTS_PER_PAGE = 25

#: ?show= filters: all alerts (open first), open ones, or open ones nobody has acknowledged.
SHOW = {
    "all": "All",
    "open": "Open",
    "unacknowledged": "To acknowledge",
}


def alert_rows(user, *, show: str = "all", application: str = ""):
    alerts = Alert.objects.visible_to(user).select_related(
        "application", "client", "agent", "storage_target", "acknowledged_by"
    )
    if show in ("open", "unacknowledged"):
        alerts = alerts.open()
    if show == "unacknowledged":
        alerts = alerts.filter(acknowledged_at__isnull=True)
    if application:
        alerts = alerts.filter(application__slug=application)
    # Open alerts first, then newest first; pk breaks ties so pages never overlap.
    closed_last = Case(
        When(resolved_at__isnull=True, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    return alerts.order_by(closed_last, "-created_at", "-pk")


def open_unacknowledged_count(user) -> int:
    """For the dashboard's "Alerts" link: what still waits for somebody to look at it."""
    return Alert.objects.visible_to(user).open().filter(acknowledged_at__isnull=True).count()


@login_required
def alert_list(request: HttpRequest) -> HttpResponse:
    show = request.GET.get("show", "all")
    if show not in SHOW:
        show = "all"
    application = request.GET.get("application", "")
    rows = alert_rows(request.user, show=show, application=application)
    page = Paginator(rows, ALERTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "portal/alerts.html",
        {"page": page, "show": show, "show_choices": SHOW, "application": application},
    )


@login_required
@require_POST
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    alert = Alert.objects.visible_to(request.user).filter(pk=pk)
    if not alert.exists():
        raise Http404("No such alert.")
    if alert_service.acknowledge(alert, by=request.user):
        messages.success(request, "Alert acknowledged: the backup team sees that you are on it.")
    else:
        acknowledged = alert.select_related("acknowledged_by").get()
        messages.info(request, f"{acknowledged.acknowledged_by} had already acknowledged this alert.")
    return redirect(_next_url(request))


def _next_url(request: HttpRequest) -> str:
    """Back to the page the button was on (same host only: no open redirect)."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("alerts")
