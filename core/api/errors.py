"""One error shape for every API: ``{"code": ..., "detail": ..., "errors": {...}}``, and its schema.

Integrations branch on ``code``; people read ``detail``; ``errors`` carries
field messages on a 400. Domain errors (``core.errors.DomainError``) carry
their own code and status.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "detail": str(exc)}
        if exc.errors is not None:
            # The service's verdict on the fields (backup expired, agent revoked, name taken…).
            body["errors"] = {field: [message] for field, message in exc.errors.items()}
        return Response(body, status=exc.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "code": "invalid",
            "detail": "The request has invalid fields; see errors.",
            "errors": exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail},
        }
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = {
            "code": codes if isinstance(codes, str) else "error",
            "detail": str(detail),
        }
    return response


# --- The schema ---------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """Every error: ``{"code", "detail", "errors"}`` (``exception_handler`` above)."""

    code = serializers.CharField(help_text="Machine-readable, e.g. invalid, not_found, four_eyes, throttled.")
    detail = serializers.CharField(help_text="For a person.")
    errors = serializers.DictField(
        required=False, help_text="On a 400 for invalid fields: field name → list of messages."
    )


_ERRORS = {
    400: "Invalid input: `errors` names the fields (code invalid, parse_error, reason_required).",
    401: "No credentials, or an unknown or revoked key (code not_authenticated, authentication_failed).",
    403: "Not allowed (code forbidden, four_eyes: nobody approves their own request).",
    404: "No such object, or one outside the caller's applications (code not_found).",
    409: "The object is not in a state that allows this (code invalid_transition).",
    415: "The body is not JSON (code unsupported_media_type).",
    422: "This Idempotency-Key was used with a different request (code idempotency_key_reused).",
    429: "Rate limited: retry after the seconds in Retry-After (code throttled).",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error responses an operation can give."""
    return {code: OpenApiResponse(ErrorSerializer, description=_ERRORS[code]) for code in sorted(set(codes))}


READ_ERRORS = (401, 404, 429)
LIST_ERRORS = (400, 401, 404, 429)
