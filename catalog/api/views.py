"""The catalog in the public API (/api/v1/), read-only: applications, clients, backups, jobs, alerts.

Tenancy is applied once, in ``CatalogViewSet.get_queryset``: an owner's key
lists the objects of their applications only, and the detail of any other
object is a 404, exactly as on the web. Each list is one query for the rows
(related objects joined, protection status computed in SQL) plus, for the
page-numbered ones, one count: the cost does not grow with the rows.

Authentication, throttling and the error shape come from ``REST_FRAMEWORK``
in the settings. Writes (requests, backup now) live in requests_app.api.
"""

from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from catalog import levels, protection
from catalog.api.pagination import BackupPagination, JobPagination, SequencePage
from catalog.api.serializers import (
    AlertSerializer,
    ApplicationSerializer,
    BackupSerializer,
    ClientSerializer,
    FileSearchPageSerializer,
    FolderPageSerializer,
    JobSerializer,
    PolicySerializer,
)
from catalog.file_index import Entry
from catalog.filtersets import AlertFilterSet, BackupApiFilterSet, ClientFilterSet, JobFilterSet
from catalog.models import Alert, Application, Backup, BackupClient, Job, ProtectionPolicy
from catalog.services import file_lists
from core.api.errors import LIST_ERRORS, READ_ERRORS, error_responses
from core.api.pagination import MAX_ID


def read_only_schema(name: str, serializer: type):
    return extend_schema_view(
        list=extend_schema(
            summary=f"List {name}", responses={200: serializer, **error_responses(*LIST_ERRORS)}
        ),
        retrieve=extend_schema(responses={200: serializer, **error_responses(*READ_ERRORS)}),
    )


class CatalogViewSet(viewsets.ReadOnlyModelViewSet):
    """Objects of the caller's applications (all of them for the backup team), newest or by name."""

    #: select_related for what the representation shows, so a page is one query.
    related: tuple[str, ...] = ()
    #: Big columns the representation does not show: a page must not drag them along.
    deferred: tuple[str, ...] = ()
    ordering: tuple[str, ...] = ("-id",)

    def get_queryset(self):
        return (
            self.queryset.model.objects.visible_to(self.request.user)
            .select_related(*self.related)
            .defer(*self.deferred)
            .order_by(*self.ordering)
        )


@read_only_schema("applications", ApplicationSerializer)
class ApplicationViewSet(CatalogViewSet):
    """The applications the caller owns (every application for the backup team), by name."""

    queryset = Application.objects.none()
    serializer_class = ApplicationSerializer
    related = ("cost_center",)
    ordering = ("name", "id")


@read_only_schema("protection policies", PolicySerializer)
class PolicyViewSet(CatalogViewSet):
    """The protection policies on offer (the service tiers every signed-in user chooses from), by name:
    schedule, RPO, retention, backup levels and price."""

    queryset = ProtectionPolicy.objects.none()
    serializer_class = PolicySerializer
    ordering = ("name", "id")


@read_only_schema("clients", ClientSerializer)
class ClientViewSet(CatalogViewSet):
    """Protected workloads with their protection status: the last available backup and whether it is
    younger than the policy's RPO. Ordered by application and name."""

    queryset = BackupClient.objects.none()
    serializer_class = ClientSerializer
    filterset_class = ClientFilterSet
    related = ("application", "agent", "policy")
    ordering = ("application__name", "name", "id")

    def get_queryset(self):
        return protection.with_rpo(super().get_queryset(), timezone.now())

    @extend_schema(
        summary="Find files by name in a client's recovery points",
        description="Paths whose name matches `name` in the client's available recovery points that have "
        "a file list, sorted by path; each with its distinct versions, newest first (a version held by "
        "several consecutive points is listed once, with how many). A glob (`*`, `?`, `[...]`) matches "
        "whole names, plain text any name containing it; case is ignored. At most "
        f"{file_lists.MAX_MATCHES} paths: `truncated` says the search stopped there.",
        parameters=[
            OpenApiParameter("name", str, required=True, description="e.g. invoice-*.pdf, or invoice"),
            *SequencePage.parameters(),
        ],
        responses={200: FileSearchPageSerializer, **error_responses(*LIST_ERRORS)},
    )
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=None)
    def files(self, request, pk=None):
        # Tenancy only: neither the list's filters (a client filter named "name") nor its annotations.
        client = get_object_or_404(BackupClient.objects.visible_to(request.user).only("pk"), pk=_id(pk))
        name = request.query_params.get("name", "")
        if not name.strip():
            raise ValidationError({"name": ["Give a file name or a pattern, e.g. invoice-*.pdf."]})
        page = SequencePage(request)
        found, truncated = file_lists.find_versions(client, name)
        results = [
            {"path": match.path, "versions": [_version(v) for v in match.versions]}
            for match in found[page.offset : page.offset + page.limit]
        ]
        return Response(page.envelope(len(found), results, truncated=truncated))


class BackupAnomalyFilterSet(BackupApiFilterSet):
    """The API's recovery points, and ``suspicious``: unlike their history and not acknowledged."""

    suspicious = django_filters.BooleanFilter(
        method="filter_suspicious",
        label="Only points found unlike their client's history and not acknowledged (true), or only others.",
    )

    class Meta(BackupApiFilterSet.Meta):
        fields = [*BackupApiFilterSet.Meta.fields, "suspicious"]

    def filter_suspicious(self, queryset, name, value):
        return queryset.suspicious() if value else queryset.not_suspicious()


@read_only_schema("backups (recovery points), newest first", BackupSerializer)
class BackupViewSet(CatalogViewSet):
    """Recovery points, newest first, paged by cursor: follow `next` (page 10,000 costs what page 1 does).
    `level` and `base` say how a point builds on another; `restorable` whether its chain is whole."""

    queryset = Backup.objects.none()
    serializer_class = BackupSerializer
    filterset_class = BackupAnomalyFilterSet
    pagination_class = BackupPagination
    related = ("client__application", "storage_target")
    deferred = ("manifest",)
    ordering = ("-taken_at", "-id")

    def get_queryset(self):
        # ``restorable`` is BackupQuerySet.restorable() as a correlated EXISTS: still one query a page.
        return levels.with_restorable(super().get_queryset())

    @extend_schema(
        summary="List a folder of a recovery point",
        description="The entries of the folder at `path` (default /) in the recovery point's file list, "
        "in the archive's order, a page at a time; `crumbs` lead from / down to the folder. For a "
        "database the folders are its schemas and the entries its tables. A recovery point without a "
        "file list is a 404 with code no_file_list (it can be restored whole); a path that is not a "
        "folder in it is a 400 with code invalid_path.",
        parameters=[
            OpenApiParameter("path", str, description="An absolute folder path (default /)."),
            *SequencePage.parameters(),
        ],
        responses={200: FolderPageSerializer, **error_responses(*LIST_ERRORS)},
    )
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=None)
    def files(self, request, pk=None):
        backup = get_object_or_404(
            Backup.objects.visible_to(request.user).only("pk", "job_id", "index_entries"), pk=_id(pk)
        )
        page = SequencePage(request)
        listing = file_lists.list_folder(
            backup, request.query_params.get("path") or "/", offset=page.offset, limit=page.limit
        )
        body = page.envelope(
            listing.total,
            [_entry(entry) for entry in listing.entries],
            path=listing.path,
            crumbs=[{"name": name, "path": path} for name, path in listing.crumbs],
        )
        return Response(body)


@read_only_schema("jobs, newest first", JobSerializer)
class JobViewSet(CatalogViewSet):
    """Backup, restore, restore-test and expiry jobs with their progress and error, newest first, paged by
    cursor: follow `next`."""

    queryset = Job.objects.none()
    serializer_class = JobSerializer
    filterset_class = JobFilterSet
    pagination_class = JobPagination
    related = ("agent",)
    deferred = ("log_tail",)
    ordering = ("-created_at", "-id")


@read_only_schema("alerts, newest first", AlertSerializer)
class AlertViewSet(CatalogViewSet):
    """Alerts of the caller's applications, newest first; `open=true` for those not resolved yet."""

    queryset = Alert.objects.none()
    serializer_class = AlertSerializer
    filterset_class = AlertFilterSet
    related = ("application", "agent")
    ordering = ("-created_at", "-id")


# --- File lists -------------------------------------------------------------------------------


def _id(pk: str) -> int:
    """A URL's id; anything that is not one is a 404, as the detail views answer."""
    try:
        value = int(pk)
    except (TypeError, ValueError):
        value = 0
    return value if 1 <= value <= MAX_ID else 0


def _time(moment: datetime | None) -> str | None:
    """A time as DRF writes one (ISO 8601, UTC, Z); None when unknown."""
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _entry(entry: Entry) -> dict:
    return {
        "name": entry.name,
        "path": entry.path,
        "type": entry.type,
        "size": entry.size,
        "mtime": _time(entry.modified),
        "mode": None if entry.mode is None else f"{entry.mode & 0o7777:04o}",
        "link": entry.link,
        "rows": entry.rows,
    }


def _version(version: file_lists.Version) -> dict:
    return {
        "backup": version.backup_id,
        "taken_at": _time(version.taken_at),
        "type": version.entry.type,
        "size": version.entry.size,
        "mtime": _time(version.entry.modified),
        "points": version.points,
    }
