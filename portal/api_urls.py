"""The public API: /api/v1/ for integrations, its OpenAPI schema and its interactive docs.

The catalog's read-only endpoints come from catalog.api, the requests and
"backup now" from requests_app.api; they meet here, where both apps may be
imported (catalog never imports requests_app).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from catalog.api import views as catalog_api
from reports.api import ReportViewSet
from requests_app.api import views as requests_api

V1_PREFIX = "/api/v1/"


class Router(DefaultRouter):
    include_format_suffixes = False  # /restore-requests.json is not part of the contract

    def get_lookup_regex(self, viewset, lookup_prefix=""):
        # Any segment reaches the view, so "/jobs/1.5/" is the API's JSON 404, not Django's HTML page.
        lookup = getattr(viewset, "lookup_url_kwarg", None) or getattr(viewset, "lookup_field", "pk")
        return rf"(?P<{lookup_prefix}{lookup}>[^/]+)"


def unknown_endpoint(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Any other URL under /api/v1/: the API's 404, in the API's error shape."""
    return JsonResponse({"code": "not_found", "detail": "No such endpoint: see /api/docs/."}, status=404)


router = Router()
router.register("restore-requests", requests_api.RestoreRequestViewSet, basename="restore-request")
router.register("client-requests", requests_api.ClientRequestViewSet, basename="client-request")
router.register("applications", catalog_api.ApplicationViewSet, basename="application")
router.register("policies", catalog_api.PolicyViewSet, basename="policy")
router.register("clients", catalog_api.ClientViewSet, basename="client")
router.register("backups", catalog_api.BackupViewSet, basename="backup")
router.register("jobs", catalog_api.JobViewSet, basename="job")
router.register("alerts", catalog_api.AlertViewSet, basename="alert")
router.register("reports", ReportViewSet, basename="report")

v1_patterns = [
    *router.urls,
    re_path(
        r"^clients/(?P<pk>[^/]+)/backup-now/$",
        requests_api.BackupNowView.as_view(),
        name="client-backup-now",
    ),
    # Last. Only paths with the trailing slash: without one, APPEND_SLASH redirects first.
    re_path(r"^.*/$", unknown_endpoint),
]

urlpatterns = [
    path("v1/", include((v1_patterns, "api-v1"))),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]


def public_endpoints_only(endpoints: list) -> list:
    """drf-spectacular preprocessing hook: document /api/v1/ only.

    The agent API (/api/agent/v1/) is a private protocol between the portal and
    its own agents (docs/agent-protocol.md); integrations must not build on it.
    """
    return [endpoint for endpoint in endpoints if endpoint[0].startswith(V1_PREFIX)]
