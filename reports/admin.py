"""Reports and the price history in the backup team's admin.

Reports are generated, never typed in: read-only, with a download link (through
the portal's download view, which checks visibility) and a "Regenerate" action
that rebuilds them in the background from today's catalog.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from catalog.admin import CatalogAdmin, nowrap
from catalog.admin_mixins import ReadOnlyAdminMixin
from catalog.formatting import human_size
from core.queue import enqueue
from reports import tasks
from reports.models import PolicyPrice, Report


@admin.register(Report)
class ReportAdmin(ReadOnlyAdminMixin, CatalogAdmin):
    """View only: "Regenerate" replaces a report; what was sent to finance and auditors stays on record."""

    list_display = ("month_label", "kind", "scope", "format", "generated_at", "mailed", "download")
    list_filter = ("kind", "format", "month")
    list_select_related = ("cost_center", "application")
    search_fields = ("cost_center__code", "cost_center__name", "application__slug", "application__name")
    date_hierarchy = "month"
    actions = ("regenerate",)
    readonly_fields = (
        "kind", "month", "cost_center", "application", "applications", "format", "paper", "download", "size",
        "pages", "summary", "generated_at", "generated_by", "emailed_to", "emailed_at",
    )  # fmt: skip
    exclude = ("file", "size_bytes")

    @admin.display(description="month", ordering="month")
    def month_label(self, obj):
        return f"{obj.month:%Y-%m}"

    @admin.display(description="scope")
    def scope(self, obj):
        return obj.scope_label

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return nowrap(human_size(obj.size_bytes))

    @admin.display(description="mailed", boolean=True)
    def mailed(self, obj):
        return obj.emailed_at is not None

    @admin.display(description="file")
    def download(self, obj):
        return format_html('<a href="{}">{}</a>', obj.get_absolute_url(), obj.download_name)

    @admin.action(description="Regenerate the selected reports from today's catalog")
    def regenerate(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        for pk in ids:
            enqueue(tasks.regenerate, pk, request.user.pk)
        self.message_user(
            request,
            f"Regenerating {len(ids)} report(s) in the background; reload in a minute.",
            messages.SUCCESS,
        )


@admin.register(PolicyPrice)
class PolicyPriceAdmin(CatalogAdmin):
    list_display = ("policy", "effective_from", "price_per_gb_month", "note", "created_at")
    list_filter = ("policy",)
    list_select_related = ("policy",)
    readonly_fields = ("created_at",)
    ordering = ("policy__name", "-effective_from")
