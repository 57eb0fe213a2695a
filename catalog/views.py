"""The owners' catalog pages: one application, one client and its recovery points.

Every object comes through ``visible_to(request.user)``: another tenant's slug or
id is a 404, the same as one that does not exist.
"""

from __future__ import annotations

import shlex

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from catalog import allow_list, protection
from catalog.filtersets import BackupFilterSet
from catalog.models import Agent, Application, Backup, BackupClient, Job
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
