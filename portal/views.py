"""Project-level views: the health check and the landing page."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache

from portal import queue


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 only when the database and the task queue answer (for load balancers and monitoring)."""
    checks, healthy = {}, True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure at all means "not healthy"
        checks["database"], healthy = f"error: {exc}", False
    try:
        queue.ping()
        checks["queue"] = "ok"
    except Exception as exc:
        checks["queue"], healthy = f"error: {exc}", False
    checks["status"] = "ok" if healthy else "error"
    return JsonResponse(checks, status=200 if healthy else 503)


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")
