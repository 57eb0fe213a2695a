"""The owners' catalog pages: one application, one client and its recovery points, and the alerts.

Every object comes through ``visible_to(request.user)``: another tenant's slug or
id is a 404, the same as one that does not exist — listed or posted to.
"""

from __future__ import annotations

import math
import shlex
import stat
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, Exists, IntegerField, OuterRef, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from catalog import allow_list, levels, protection
from catalog.choices import BackupStatus
from catalog.errors import InvalidPath, NoFileList
from catalog.file_index import DATABASE_KINDS, Entry
from catalog.filtersets import BackupFilterSet
from catalog.models import Agent, Alert, Application, Backup, BackupClient, Job
from catalog.services import alerts as alert_service
from catalog.services import anomalies, file_lists
from catalog.services import clients as client_service
from catalog.tables import AgentTable, BackupTable, ClientTable
from core.errors import MfaRequired
from identity import mfa as identity_mfa

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
        protection.annotate_clients(BackupClient.objects.visible_to(request.user), now)
        .select_related("application", "agent", "policy__storage_target")
        # Suspicious points are rare: the list below is read only when there are some.
        .annotate(has_suspicious=Exists(Backup.objects.filter(client=OuterRef("pk")).suspicious())),
        pk=pk,
    )
    # Ordered newest first by the table, which backup_client_recent_idx serves; the lazy
    # paginator reads one row past the page instead of counting millions.
    backups = levels.with_restorable(Backup.objects.visible_to(request.user).filter(client=client))
    filterset = BackupFilterSet(request.GET, queryset=backups, request=request)
    table = BackupTable(filterset.qs if filterset.is_valid() else backups.none())
    RequestConfig(
        request, paginate={"per_page": BACKUPS_PER_PAGE, "paginator_class": LazyPaginator}
    ).configure(table)
    jobs = Job.objects.visible_to(request.user).filter(client=client).order_by("-created_at")[:RECENT_JOBS]
    suspicious = (
        list(
            Backup.objects.visible_to(request.user)
            .filter(client=client)
            .suspicious()
            .order_by("-taken_at", "-pk")[:SUSPICIOUS_SHOWN]
        )
        if client.has_suspicious
        else []
    )
    return render(
        request,
        "catalog/client_detail.html",
        {
            "client": client,
            "retirable": client.status in client_service.RETIRABLE,
            "suspicious": suspicious,
            "last_known_clean": anomalies.clean_before(client.pk, suspicious[0]) if suspicious else None,
            "options": describe_options(client.options),
            "allow_list": client.agent.allow_list if client.agent else None,
            "refusals": allow_list.refusals(client),
            "filter": filterset,
            "table": table,
            "jobs": jobs,
        },
    )


#: Suspicious recovery points listed on a client's page (newest first); more is an incident, not a list.
SUSPICIOUS_SHOWN = 10


@login_required
@require_POST
def acknowledge_anomaly(request: HttpRequest, client_id: int, backup_id: int) -> HttpResponse:
    """An owner (or the backup team) says a suspicious point is expected, with a note saying why."""
    backup = get_object_or_404(
        Backup.objects.visible_to(request.user).select_related("client"), pk=backup_id, client_id=client_id
    )
    try:
        done = anomalies.acknowledge(
            backup,
            by=request.user,
            note=request.POST.get("note", ""),
            mfa=identity_mfa.session_passed_mfa(request),
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except MfaRequired as exc:
        page = reverse("catalog:client", args=[client_id])
        messages.error(request, identity_mfa.refusal_html(str(exc), page))
    else:
        if done:
            messages.success(
                request,
                f"Backup {backup.pk} acknowledged as expected: it is no longer marked suspicious, its alert "
                "is resolved, and later backups are compared with it.",
            )
        else:
            messages.info(request, f"Backup {backup.pk} is not marked suspicious (any more).")
    return redirect("catalog:client", pk=client_id)


# --- Files of a recovery point --------------------------------------------------------------
# A folder's page reads the index file (one or two compressed blocks), never a row per file:
# session, user and the backup with its client and application — the same queries whatever
# the folder holds.

FILES_PER_PAGE = 100
NO_FILE_LIST = (
    "No file list: this recovery point was taken before file lists existed (or its plugin makes none). "
    "It can be restored whole."
)
#: Icon (an SVG symbol in templates/catalog/_file_icons.html) and label of each entry type.
ENTRY_TYPES = {
    "directory": ("folder", "Folder"),
    "file": ("file", "File"),
    "symlink": ("symlink", "Symbolic link"),
    "hardlink": ("hardlink", "Hard link"),
    "schema": ("schema", "Schema"),
    "table": ("table", "Table"),
    "view": ("view", "View"),
    "materialized view": ("view", "Materialized view"),
}
_MODE_TYPE = {"directory": stat.S_IFDIR, "symlink": stat.S_IFLNK}
FOLDER_TYPES = ("directory", "schema")


@dataclass(frozen=True)
class FileRow:
    """One line of a folder's table, ready to print."""

    entry: Entry
    icon: str
    kind: str
    browse_url: str  # a folder or schema: its own listing
    modified: str
    modified_title: str
    mode: str
    selectable: bool


def _files_url(backup: Backup, path: str, page: int = 1) -> str:
    query = {"path": path} if page == 1 else {"path": path, "page": page}
    return reverse("catalog:browse", args=[backup.client_id, backup.pk]) + "?" + urlencode(query)


def parent_folder(path: str) -> str:
    """The folder holding ``path`` ("/srv/app/x" → "/srv/app", "/x" → "/")."""
    return path.rstrip("/").rsplit("/", 1)[0] or "/"


def mode_text(entry: Entry) -> str:
    """``-rw-r--r--`` as ls shows it; empty when the index has no mode (a database object)."""
    if entry.mode is None:
        return ""
    return stat.filemode(_MODE_TYPE.get(entry.type, stat.S_IFREG) | (entry.mode & 0o7777))


def file_row(backup: Backup, entry: Entry, *, database: bool) -> FileRow:
    icon, kind = ENTRY_TYPES.get(entry.type, ("object" if database else "file", entry.type.capitalize()))
    moment = entry.modified
    folder = entry.type in FOLDER_TYPES
    return FileRow(
        entry=entry,
        icon=icon,
        kind=kind,
        browse_url=_files_url(backup, entry.path) if folder else "",
        modified=f"{moment:%Y-%m-%d %H:%M}" if moment else "",
        modified_title=f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "",
        mode=mode_text(entry),
        # A database restores tables (and other objects), not whole schemas.
        selectable=not (database and entry.type == "schema"),
    )


def _page_number(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


@login_required
def browse_files(request: HttpRequest, client_id: int, backup_id: int) -> HttpResponse:
    """A folder of a recovery point's file list (or a database dump's schemas and tables)."""
    backup = get_object_or_404(
        Backup.objects.visible_to(request.user).select_related("client__application"),
        pk=backup_id,
        client_id=client_id,
    )
    context = {
        "backup": backup,
        "client": backup.client,
        "restorable": backup.status == BackupStatus.AVAILABLE,
        "database": (backup.index_kind or backup.client.plugin) in DATABASE_KINDS,
        "no_file_list": NO_FILE_LIST,
    }
    if not backup.has_file_list:
        return render(request, "catalog/file_browser.html", context)
    path = request.GET.get("path") or "/"
    page = _page_number(request.GET.get("page"))
    try:
        listing = file_lists.list_folder(
            backup, path, offset=(page - 1) * FILES_PER_PAGE, limit=FILES_PER_PAGE
        )
        pages = max(1, math.ceil(listing.total / FILES_PER_PAGE))
        if page > pages:  # an old link to a page past the end: show the last one
            page = pages
            listing = file_lists.list_folder(
                backup, path, offset=(page - 1) * FILES_PER_PAGE, limit=FILES_PER_PAGE
            )
    except NoFileList as exc:
        context["unreadable"] = str(exc)
        return render(request, "catalog/file_browser.html", context)
    except InvalidPath as exc:
        context.update(error=str(exc), root_url=_files_url(backup, "/"))
        return render(request, "catalog/file_browser.html", context, status=400)
    database = context["database"]
    context.update(
        listing=listing,
        rows=[file_row(backup, entry, database=database) for entry in listing.entries],
        crumbs=[(name, _files_url(backup, crumb)) for name, crumb in listing.crumbs],
        page=page,
        pages=pages,
        first=(page - 1) * FILES_PER_PAGE + 1,
        last=(page - 1) * FILES_PER_PAGE + len(listing.entries),
        previous_url=_files_url(backup, listing.path, page - 1) if page > 1 else "",
        next_url=_files_url(backup, listing.path, page + 1) if page < pages else "",
        parent_url=_files_url(backup, parent_folder(listing.path)) if listing.path != "/" else "",
        search_url=reverse("catalog:search", args=[backup.client_id]),
    )
    return render(request, "catalog/file_browser.html", context)


@dataclass(frozen=True)
class VersionRow:
    version: file_lists.Version
    modified: str
    restore_url: str
    browse_url: str


def _version_row(client: BackupClient, path: str, version: file_lists.Version) -> VersionRow:
    moment = version.entry.modified
    restore = reverse("requests:restore", args=[version.backup_id])
    folder = reverse("catalog:browse", args=[client.pk, version.backup_id])
    return VersionRow(
        version=version,
        modified=f"{moment:%Y-%m-%d %H:%M}" if moment else "",
        restore_url=restore + "?" + urlencode({"path": path}),
        browse_url=folder + "?" + urlencode({"path": parent_folder(path)}),
    )


@login_required
def search_files(request: HttpRequest, client_id: int) -> HttpResponse:
    """Files and folders of a client by name, in every retained recovery point, with their versions."""
    client = get_object_or_404(
        BackupClient.objects.visible_to(request.user).select_related("application"), pk=client_id
    )
    name = request.GET.get("name", "").strip()
    context: dict = {"client": client, "name": name, "max_matches": file_lists.MAX_MATCHES}
    if name:
        try:
            found, truncated = file_lists.find_versions(client, name)
        except InvalidPath as exc:
            context["error"] = str(exc)
        else:
            results = [(item, [_version_row(client, item.path, v) for v in item.versions]) for item in found]
            context.update(results=results, truncated=truncated, searched=True)
    return render(request, "catalog/file_search.html", context)


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
