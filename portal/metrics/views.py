"""``GET /metrics``: the Prometheus text format, for the backup team's scraper only.

Who may read it is decided here and nowhere else, from two settings
(docs/monitoring.md, "Access"):

- ``PORTAL_METRICS_TOKEN``: a scraper presenting ``Authorization: Bearer <token>``
  (compared in constant time);
- ``PORTAL_METRICS_ALLOW``: addresses or networks (CIDR) a scraper may come from, the
  client address as the sign-in lockout and the API throttles see it
  (``portal.auth.client_ip``, so ``NUM_PROXIES`` decides whether ``X-Forwarded-For`` counts).

Either opens it. With neither set the page does not exist (404): closed by default.
A signed-in session opens nothing: the metrics name every application's clients,
which owners must not see of each other (and the backup team reads them in Grafana).
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from portal.auth import client_ip
from portal.metrics import latency
from portal.metrics.collector import PortalCollector

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as exc:
        raise ImproperlyConfigured(f"PORTAL_METRICS_ALLOW: {exc}") from exc


def address_allowed(request: HttpRequest) -> bool:
    allowed = networks(tuple(settings.PORTAL_METRICS_ALLOW))
    if not allowed:
        return False
    try:
        address = ipaddress.ip_address(client_ip(request) or "")
    except ValueError:
        return False
    return any(address in network for network in allowed)


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics, else the answer that says why not."""
    expected = settings.PORTAL_METRICS_TOKEN
    if not expected and not settings.PORTAL_METRICS_ALLOW:
        raise Http404("metrics are not configured")
    presented = bearer_token(request)
    if expected and presented is not None and hmac.compare_digest(presented.encode(), expected.encode()):
        return None
    if address_allowed(request):
        return None
    if presented is not None:
        return text(403, "Forbidden: wrong metrics token.\n")
    if expected:
        response = text(401, "Unauthorized: /metrics needs 'Authorization: Bearer <PORTAL_METRICS_TOKEN>'.\n")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return text(403, "Forbidden: this address is not in PORTAL_METRICS_ALLOW.\n")


def text(status: int, body: str) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    catalog = CollectorRegistry(auto_describe=False)
    catalog.register(PortalCollector())
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Small index probes, which PostgreSQL's JIT would spend most of the scrape compiling
            # (0.76 s of 0.85 s for the per-client query on 10,000 clients: docs/performance.md).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        body = generate_latest(catalog)
    body += generate_latest(latency.registry())
    # The classic text format (0.0.4), which every Prometheus 2.x and 3.x reads; the names are ASCII.
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
