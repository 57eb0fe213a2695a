"""One FilterSet per catalog model: shared by the portal's tables, the API and CSV exports."""

from __future__ import annotations

import django_filters
from django_filters.widgets import DateRangeWidget

from catalog.choices import BackupStatus
from catalog.models import Backup


class BackupFilterSet(django_filters.FilterSet):
    """Recovery points by when they were taken (whole days, inclusive) and status."""

    taken_at = django_filters.DateFromToRangeFilter(
        label="Taken between",
        widget=DateRangeWidget(attrs={"type": "date"}),
    )
    status = django_filters.ChoiceFilter(choices=BackupStatus.choices, empty_label="Any status")

    class Meta:
        model = Backup
        fields = ["taken_at", "status"]
