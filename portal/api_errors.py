"""One error shape for every API: ``{"code": ..., "detail": ..., "errors": {...}}``.

Integrations branch on ``code``; people read ``detail``; ``errors`` carries
field messages on a 400.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from catalog.errors import CatalogError, InvalidEnrolment, InvalidTransition, LeaseLost
from requests_app.errors import FourEyesViolation, InvalidRequest, NotPermitted, ReasonRequired

_DOMAIN_STATUS = {
    InvalidTransition: status.HTTP_409_CONFLICT,
    LeaseLost: status.HTTP_409_CONFLICT,
    InvalidEnrolment: status.HTTP_400_BAD_REQUEST,
    FourEyesViolation: status.HTTP_403_FORBIDDEN,
    NotPermitted: status.HTTP_403_FORBIDDEN,
    ReasonRequired: status.HTTP_400_BAD_REQUEST,
    InvalidRequest: status.HTTP_400_BAD_REQUEST,
}


def exception_handler(exc, context):
    if isinstance(exc, InvalidRequest):
        # The service's verdict on the fields (backup expired, agent revoked, name taken…).
        errors = {field: [message] for field, message in exc.errors.items()}
        return Response(
            {"code": exc.code, "detail": str(exc), "errors": errors},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, CatalogError):
        code = _DOMAIN_STATUS.get(type(exc), status.HTTP_409_CONFLICT)
        return Response({"code": exc.code, "detail": str(exc)}, status=code)
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
