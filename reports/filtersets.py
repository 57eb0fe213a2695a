"""The reports page's filters."""

from __future__ import annotations

import django_filters
from django import forms

from reports.choices import ReportKind
from reports.models import Report
from reports.periods import Month


class ReportFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=ReportKind.choices, empty_label="All reports")
    month = django_filters.CharFilter(method="filter_month", label="Month", widget=forms.TextInput(
        attrs={"placeholder": "YYYY-MM", "pattern": r"\d{4}-\d{2}", "size": 8}
    ))  # fmt: skip

    class Meta:
        model = Report
        fields = ["kind", "month"]

    def filter_month(self, queryset, name, value):
        try:
            month = Month.parse(value)
        except ValueError:
            return queryset.none()
        return queryset.filter(month=month.first_day)
