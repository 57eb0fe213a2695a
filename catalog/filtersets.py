"""One FilterSet per catalog model: shared by the portal's tables, the API and CSV exports.

The public API's filters take ids, slugs and exact instants; they refuse what
the database could not compare (an id beyond bigint, a time outside years
1–9999 once in UTC) as a 400, never a 500.
"""

from __future__ import annotations

from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from django_filters.widgets import DateRangeWidget
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from catalog.choices import (
    AlertKind,
    AlertSeverity,
    BackupLevel,
    BackupStatus,
    ClientStatus,
    JobKind,
    JobState,
    Plugin,
)
from catalog.models import Alert, Backup, BackupClient, Job
from core.api.pagination import MAX_ID


@extend_schema_field(OpenApiTypes.INT64)
class IdFilter(django_filters.NumberFilter):
    """An object's id, as an integer the database can hold."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class InstantField(IsoDateTimeField):
    def to_python(self, value):
        value = super().to_python(value)
        if value is not None:
            try:
                value.astimezone(UTC)  # what the database is sent
            except OverflowError as exc:
                raise ValidationError("This moment is out of range.", code="invalid") from exc
        return value


@extend_schema_field(OpenApiTypes.DATETIME)
class InstantFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date and time, e.g. 2025-01-31T02:00:00Z (a time without offset is UTC)."""

    field_class = InstantField


class BackupFilterSet(django_filters.FilterSet):
    """Recovery points by when they were taken (whole days, inclusive), status and level."""

    taken_at = django_filters.DateFromToRangeFilter(
        label="Taken between",
        widget=DateRangeWidget(attrs={"type": "date"}),
    )
    status = django_filters.ChoiceFilter(choices=BackupStatus.choices, empty_label="Any status")
    level = django_filters.ChoiceFilter(choices=BackupLevel.choices, empty_label="Full or incremental")

    class Meta:
        model = Backup
        fields = ["taken_at", "status", "level"]


class BackupApiFilterSet(BackupFilterSet):
    """The API's recovery points: by client, application and exact instants instead of whole days.

    ``taken_after`` is inclusive and ``taken_before`` exclusive, so consecutive
    windows neither overlap nor leave a gap.
    """

    taken_at = None  # the web's day range; the API filters by instant below
    client = IdFilter(field_name="client_id")
    application = django_filters.CharFilter(field_name="client__application__slug", max_length=64)
    taken_after = InstantFilter(field_name="taken_at", lookup_expr="gte")
    taken_before = InstantFilter(field_name="taken_at", lookup_expr="lt")

    class Meta(BackupFilterSet.Meta):
        fields = ["client", "application", "taken_after", "taken_before", "status", "level"]


class JobFilterSet(django_filters.FilterSet):
    """Jobs by state, kind, client, and created since an instant (inclusive)."""

    state = django_filters.ChoiceFilter(choices=JobState.choices)
    kind = django_filters.ChoiceFilter(choices=JobKind.choices)
    client = IdFilter(field_name="client_id")
    since = InstantFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Job
        fields = ["state", "kind", "client", "since"]


class ClientFilterSet(django_filters.FilterSet):
    """Protected workloads by application, status and plugin."""

    application = django_filters.CharFilter(field_name="application__slug", max_length=64)
    status = django_filters.ChoiceFilter(choices=ClientStatus.choices)
    plugin = django_filters.ChoiceFilter(choices=Plugin.choices)

    class Meta:
        model = BackupClient
        fields = ["application", "status", "plugin"]


class AlertFilterSet(django_filters.FilterSet):
    """Alerts by severity, kind, application, client, and whether still open (unresolved)."""

    severity = django_filters.ChoiceFilter(choices=AlertSeverity.choices)
    kind = django_filters.ChoiceFilter(choices=AlertKind.choices)
    application = django_filters.CharFilter(field_name="application__slug", max_length=64)
    client = IdFilter(field_name="client_id")
    open = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull")

    class Meta:
        model = Alert
        fields = ["severity", "kind", "application", "client", "open"]
