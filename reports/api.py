"""Reports in the public API: ``GET /api/v1/reports/`` with a download link per file.

Same tenancy as the portal's reports page (``Report.objects.visible_to``): an
owner's key lists the reports of their applications and of the cost centres all
of whose applications they own, and the download of any other report is a 404.
"""

from __future__ import annotations

from django.http import FileResponse, Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action

from core.api.errors import LIST_ERRORS, READ_ERRORS, error_responses
from reports.choices import CONTENT_TYPES
from reports.filtersets import ReportFilterSet
from reports.models import Report


class ReportSerializer(serializers.ModelSerializer):
    month = serializers.SerializerMethodField(help_text="The month reported on, YYYY-MM.")
    cost_center = serializers.SlugRelatedField(slug_field="code", read_only=True)
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    download_url = serializers.SerializerMethodField(help_text="GET it with the same credentials.")

    class Meta:
        model = Report
        fields = (
            "id",
            "kind",
            "month",
            "cost_center",
            "application",
            "format",
            "paper",
            "pages",
            "size_bytes",
            "generated_at",
            "download_url",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_month(self, obj: Report) -> str:
        return obj.month.strftime("%Y-%m")

    @extend_schema_field(serializers.URLField())
    def get_download_url(self, obj: Report) -> str:
        path = reverse("api-v1:report-download", args=[obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


@extend_schema_view(
    list=extend_schema(
        summary="List reports", responses={200: ReportSerializer, **error_responses(*LIST_ERRORS)}
    ),
    retrieve=extend_schema(responses={200: ReportSerializer, **error_responses(*READ_ERRORS)}),
)
class ReportViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ReportSerializer
    filterset_class = ReportFilterSet

    def get_queryset(self):
        return (
            Report.objects.visible_to(self.request.user)
            .select_related("cost_center", "application")
            .order_by("-month", "kind", "-id")
        )

    @extend_schema(
        summary="Download the report's file",
        responses={
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY),
            **error_responses(*READ_ERRORS),
        },
    )
    @action(detail=True, methods=["get"], url_path="download")
    def download(self, request, pk=None) -> FileResponse:
        report = self.get_object()
        try:
            handle = report.file.open("rb")
        except (FileNotFoundError, ValueError):
            raise Http404("The report's file is gone; ask the backup team to regenerate it.") from None
        return FileResponse(
            handle,
            as_attachment=True,
            filename=report.download_name,
            content_type=CONTENT_TYPES[report.format],
        )
