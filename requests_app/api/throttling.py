"""Rate limits of the public API, per integration (API key) or per signed-in person.

Two scopes work together: ``api_burst`` (per minute) stops a runaway loop at
once, ``api_sustained`` (per hour) caps the steady load. The rates are read
from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` at each request — DRF reads
them once at import, which no setting change would reach.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from requests_app.models import ApiKey


class CallerRateThrottle(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"api_key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            return None  # agents and anonymous callers: their own views throttle them
        return self.cache_format % {"scope": self.scope, "ident": ident}


class BurstRateThrottle(CallerRateThrottle):
    scope = "api_burst"


class SustainedRateThrottle(CallerRateThrottle):
    scope = "api_sustained"
