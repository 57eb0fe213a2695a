"""The ``object`` of a webhook: the REST API's representation of the thing that changed, as plain dicts.

The field names are the contract of issue #5 (integrations are configured
against them). These functions *are* the API's serializers, so a receiver can
handle a webhook's ``object`` and a ``GET`` answer with the same code.
Related objects appear as the identifiers a caller uses to create them:
an agent by hostname, an application by slug, a policy by name, anything else
by id. Times are ISO 8601 in UTC with a ``Z``, as DRF writes them.

The enrolment token of a client request is deliberately absent: it is a secret
for the requester, and a webhook goes to a machine.

Each function reads only the row and the relations named in ``RELATED``;
load them with ``select_related(*RELATED[...])`` to keep it to one query.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from catalog.api.serializers import AlertSerializer, JobSerializer
from catalog.models import Alert, Job
from requests_app.api.serializers import ClientRequestSerializer, RestoreRequestSerializer
from requests_app.models import ClientRequest, RestoreRequest

#: What each representation reads beyond the row itself.
RELATED: dict[str, tuple[str, ...]] = {
    "restore_request": ("target_agent",),
    "client_request": ("application", "policy"),
    "job": (),
    "alert": ("application", "agent"),
}


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, ``Z`` for the offset, microseconds kept (DRF's DateTimeField output)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _api(serializer_class, obj) -> dict[str, Any]:
    # Plain dicts and lists, so the body is ordinary JSON whatever DRF returns.
    return json.loads(json.dumps(serializer_class(obj).data))


def restore_request(obj: RestoreRequest) -> dict[str, Any]:
    return _api(RestoreRequestSerializer, obj)


def client_request(obj: ClientRequest) -> dict[str, Any]:
    representation = _api(ClientRequestSerializer, obj)
    representation.pop("enrolment_token", None)  # a secret for the requester, never for a machine
    return representation


def job(obj: Job) -> dict[str, Any]:
    return _api(JobSerializer, obj)


def alert(obj: Alert) -> dict[str, Any]:
    return _api(AlertSerializer, obj)
