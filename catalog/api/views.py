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

from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets

from catalog import protection
from catalog.api.pagination import BackupPagination, JobPagination
from catalog.api.serializers import (
    AlertSerializer,
    ApplicationSerializer,
    BackupSerializer,
    ClientSerializer,
    JobSerializer,
)
from catalog.filtersets import AlertFilterSet, BackupApiFilterSet, ClientFilterSet, JobFilterSet
from catalog.models import Alert, Application, Backup, BackupClient, Job
from core.api.errors import LIST_ERRORS, READ_ERRORS, error_responses


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


@read_only_schema("backups (recovery points), newest first", BackupSerializer)
class BackupViewSet(CatalogViewSet):
    """Recovery points, newest first, paged by cursor: follow `next` (page 10,000 costs what page 1 does)."""

    queryset = Backup.objects.none()
    serializer_class = BackupSerializer
    filterset_class = BackupApiFilterSet
    pagination_class = BackupPagination
    related = ("client__application", "storage_target")
    deferred = ("manifest",)
    ordering = ("-taken_at", "-id")


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
