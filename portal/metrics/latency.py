"""The portal's request latency: one histogram, observed by a middleware, with bounded labels.

Labels: the HTTP method (the usual ones, else ``other``), the route (the resolved URL
pattern's name, e.g. ``agent-api:poll`` or ``admin:catalog_job_changelist``; ``other``
for anything that resolved to no named pattern, such as a 404 for a made-up path), and
the status class (``2xx`` … ``5xx``). No path, id or user: the series count is fixed by
the URL configuration, however many objects or users there are.

Under gunicorn each worker observes its own requests. With ``PROMETHEUS_MULTIPROC_DIR``
set (before the workers start: prometheus_client decides when it is imported) the
workers write to files in that folder and ``/metrics`` adds them up, whichever worker
answers (``registry()``); unset, each process reports only its own requests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Histogram, multiprocess

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: From a 5 ms idle agent poll to a 30 s report build.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_PROCESS = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    "backup_portal_http_request_duration_seconds",
    "Time the portal took to answer a request, by method, route (URL name) and status class.",
    ["method", "route", "status"],
    buckets=BUCKETS,
    registry=_PROCESS,
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry() -> CollectorRegistry:
    """The histogram as /metrics reports it: every worker's (multiprocess mode) or this process's."""
    if multiprocess_mode():
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return combined
    return _PROCESS


def route_of(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return (match.view_name if match and match.url_name else None) or "other"


class LatencyMiddleware:
    """Times every request from here down (settings.MIDDLEWARE, near the top)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in METHODS else "other"
        REQUEST_SECONDS.labels(method, route_of(request), f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        return response
