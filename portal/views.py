"""Project-level views: the health check."""

import logging

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from core import queue

log = logging.getLogger(__name__)


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 only when the database and the task queue answer (for load balancers and monitoring)."""
    checks, healthy = {}, True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # any failure at all means "not healthy"
        # Logged, not shown: driver errors name internal hosts, ports and users.
        log.exception("healthz: database check failed")
        checks["database"], healthy = "error", False
    try:
        queue.ping()
        checks["queue"] = "ok"
    except Exception:
        log.exception("healthz: task queue check failed")
        checks["queue"], healthy = "error", False
    checks["status"] = "ok" if healthy else "error"
    return JsonResponse(checks, status=200 if healthy else 503)
