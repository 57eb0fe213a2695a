"""The portal's reports page and downloads: every report through ``Report.objects.visible_to``.

Report files are never served from MEDIA_URL: a download goes through this view,
which answers 404 for another tenant's report exactly as for one that does not exist.
"""

from __future__ import annotations

from itertools import groupby

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from reports.choices import CONTENT_TYPES
from reports.filtersets import ReportFilterSet
from reports.models import Report

#: Rows (a report in its formats) per page.
PER_PAGE = 40


@login_required
def report_list(request: HttpRequest) -> HttpResponse:
    reports = Report.objects.visible_to(request.user).select_related("cost_center", "application")
    filterset = ReportFilterSet(request.GET, queryset=reports)
    rows = filterset.qs if filterset.is_valid() else reports.none()
    page = Paginator(
        rows.order_by("-month", "kind", "cost_center__code", "application__slug", "format"), PER_PAGE * 2
    )
    current = page.get_page(request.GET.get("page"))
    return render(
        request,
        "reports/report_list.html",
        {"filter": filterset, "page": current, "groups": _by_scope(current.object_list)},
    )


def _by_scope(reports) -> list[dict]:
    """One row per (month, kind, scope) with its PDF and CSV side by side."""

    def key(report):
        return (report.month, report.kind, report.cost_center_id, report.application_id)

    rows = []
    for _, same in groupby(reports, key=key):
        files = list(same)
        rows.append({"report": files[0], "files": files})
    return rows


@login_required
def download(request: HttpRequest, pk: int) -> FileResponse:
    report = get_object_or_404(
        Report.objects.visible_to(request.user).select_related("cost_center", "application"), pk=pk
    )
    try:
        handle = report.file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The report's file is gone; ask the backup team to regenerate it.") from None
    return FileResponse(
        handle, as_attachment=True, filename=report.download_name, content_type=CONTENT_TYPES[report.format]
    )
