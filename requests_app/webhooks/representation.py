"""The ``object`` of a webhook: the REST API's representation of the thing that changed, as plain dicts.

The field names are the contract of issue #5 (integrations are configured
against them); the API's serializers produce exactly the same dicts, so a
receiver can handle a webhook's ``object`` and a ``GET`` answer with the same
code. Related objects appear as the identifiers a caller uses to create them:
an agent by hostname, an application by slug, a policy by name, anything else
by id. Times are ISO 8601 in UTC with a ``Z``, as DRF writes them.

The enrolment token of a client request is deliberately absent: it is a secret
for the requester, and a webhook goes to a machine.

Each function reads only the row and the relations named in ``RELATED``;
load them with ``select_related(*RELATED[...])`` to keep it to one query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from catalog.models import Alert, Job
from requests_app.choices import RequestStatus
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


def _request_head(obj: ClientRequest | RestoreRequest) -> dict[str, Any]:
    return {"id": obj.pk, "status": obj.status, "needs_approval": obj.needs_approval}


def _request_tail(obj: ClientRequest | RestoreRequest) -> dict[str, Any]:
    return {
        "error": obj.error,
        "created_at": timestamp(obj.created_at),
        "updated_at": timestamp(obj.updated_at),
    }


def restore_request(obj: RestoreRequest) -> dict[str, Any]:
    return {
        **_request_head(obj),
        "backup": obj.backup_id,
        "target_agent": obj.target_agent.hostname,
        "target_location": obj.target_location,
        "overwrite": obj.overwrite,
        "reason": obj.reason,
        "external_ref": obj.external_ref,
        "job": obj.job_id,
        **_request_tail(obj),
    }


def client_request(obj: ClientRequest) -> dict[str, Any]:
    return {
        **_request_head(obj),
        "application": obj.application.slug,
        "hostname": obj.hostname,
        "plugin": obj.plugin,
        "options": obj.options,
        "policy": obj.policy.name,
        "justification": obj.justification,
        "external_ref": obj.external_ref,
        # The contract's "id once provisioned": before that the client exists but is not live.
        "client": obj.client_id if obj.status == RequestStatus.PROVISIONED else None,
        **_request_tail(obj),
    }


def job(obj: Job) -> dict[str, Any]:
    return {
        "id": obj.pk,
        "kind": obj.kind,
        "state": obj.state,
        "client": obj.client_id,
        "attempt": obj.attempt,
        "bytes_done": obj.bytes_done,
        "bytes_total": obj.bytes_total,
        "error_class": obj.error_class,
        "error": obj.error_message,
        "created_at": timestamp(obj.created_at),
        "started_at": timestamp(obj.started_at),
        "finished_at": timestamp(obj.finished_at),
    }


def alert(obj: Alert) -> dict[str, Any]:
    return {
        "id": obj.pk,
        "kind": obj.kind,
        "severity": obj.severity,
        "message": obj.message,
        "application": obj.application.slug if obj.application_id else None,
        "client": obj.client_id,
        "agent": obj.agent.hostname if obj.agent_id else None,
        "created_at": timestamp(obj.created_at),
        "resolved_at": timestamp(obj.resolved_at),
        "acknowledged_at": timestamp(obj.acknowledged_at),
    }
