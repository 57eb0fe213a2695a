"""The usage meter's middleware: first in MIDDLEWARE, so it ticks after everything else has answered."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed

from core import usage


class UsageMeterMiddleware:
    """Tick this process's usage meter after each request (core.usage: no query until a flush is due).

    Off (not even loaded) with ``PORTAL_USAGE_METER=false``.
    """

    def __init__(self, get_response):
        if not settings.PORTAL_USAGE_METER:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        usage.meter.tick()
        return response
