"""What drf-spectacular needs to know about the public API beyond the views themselves."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "requests_app.api.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An integration's key: `Authorization: Token <key>` "
            "(created with `manage.py create_api_key`).",
        }


IDEMPOTENCY_KEY = OpenApiParameter(
    name="Idempotency-Key",
    type={"type": "string", "minLength": 1, "maxLength": 255},
    location=OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (a UUID): a repeat of this POST with the same key and body replays the "
    "first answer, with the header Idempotent-Replayed: true; the same key with another body is a 422. "
    "Keys are kept at least 24 hours.",
)
