"""The owners' catalog pages: one application, one client and its recovery points, and the alerts.

Every object comes through ``visible_to(request.user)``: another tenant's slug or
id is a 404, the same as one that does not exist — listed or posted to.
"""

from __future__ import annotations

import shlex

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from catalog import allow_list, protection
from catalog.filtersets import BackupFilterSet
from catalog.models import Agent, Alert, Application, Backup, BackupClient, Job
from catalog.services import alerts as alert_service
from catalog.tables import AgentTable, BackupTable, ClientTable

BACKUPS_PER_PAGE = 25
RECENT_JOBS = 10
OPTION_LABELS = {
    "paths": "Folders",
    "exclude": "Excluded",
    "database": "Database",
    "host": "Database host",
    "port": "Port",
    "user": "Database user",
    "backup_argv": "Backup command",
    "restore_argv": "Restore command",
}


def describe_options(options: dict) -> list[tuple[str, str]]:
    """A client's plugin options as (label, text) for people: lists on one line, commands shell-quoted."""
    rows = []
    for key, value in options.items():
        if key.endswith("_argv") and isinstance(value, list):
            text = shlex.join(str(arg) for arg in value)
        elif isinstance(value, list):
            text = ", ".join(str(item) for item in value)
        else:
            text = str(value)
        rows.append((OPTION_LABELS.get(key, key), text))
    return rows


@login_required
def application_detail(request: HttpRequest, slug: str) -> HttpResponse:
    now = timezone.now()
    application = get_object_or_404(
        protection.annotate_applications(
            Application.objects.visible_to(request.user).select_related("cost_center"), now
        ),
        slug=slug,
    )
    clients = protection.annotate_clients(
        BackupClient.objects.visible_to(request.user).filter(application=application), now
    ).select_related("policy")
    agents = Agent.objects.visible_to(request.user).filter(applications=application)
    return render(
        request,
        "catalog/application_detail.html",
        {
            "application": application,
            "clients_table": ClientTable(clients),
            "agents_table": AgentTable(agents),
        },
    )


@login_required
def client_detail(request: HttpRequest, pk: int) -> HttpResponse:
    now = timezone.now()
    client = get_object_or_404(
        protection.annotate_clients(BackupClient.objects.visible_to(request.user), now).select_related(
            "application", "agent", "policy__storage_target"
        ),
        pk=pk,
    )
    # Ordered newest first by the table, which backup_client_recent_idx serves; the lazy
    # paginator reads one row past the page instead of counting millions.
    backups = Backup.objects.visible_to(request.user).filter(client=client)
    filterset = BackupFilterSet(request.GET, queryset=backups, request=request)
    table = BackupTable(filterset.qs if filterset.is_valid() else backups.none())
    RequestConfig(
        request, paginate={"per_page": BACKUPS_PER_PAGE, "paginator_class": LazyPaginator}
    ).configure(table)
    jobs = Job.objects.visible_to(request.user).filter(client=client).order_by("-created_at")[:RECENT_JOBS]
    return render(
        request,
        "catalog/client_detail.html",
        {
            "client": client,
            "options": describe_options(client.options),
            "allow_list": client.agent.allow_list if client.agent else None,
            "refusals": allow_list.refusals(client),
            "filter": filterset,
            "table": table,
            "jobs": jobs,
        },
    )


# --- Alerts -------------------------------------------------------------------------------------
# The list costs the same five queries whatever the number of alerts: session, user,
# the backup-team check, the count and one page of rows with their relations joined.

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
