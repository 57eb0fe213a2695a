"""Writing the audit trail. Called inside the transition's transaction, so the event and the
state change commit together or not at all."""

from __future__ import annotations

from requests_app.actors import Actor
from requests_app.models import AuditEvent, ClientRequest, RestoreRequest


def record(
    request: ClientRequest | RestoreRequest,
    actor: Actor,
    action: str,
    *,
    from_status: str = "",
    to_status: str = "",
    message: str = "",
) -> AuditEvent:
    links = (
        {"client_request": request} if isinstance(request, ClientRequest) else {"restore_request": request}
    )
    return AuditEvent.objects.create(
        application_id=_application_id(request),
        actor_kind=actor.kind,
        actor_user=actor.user if actor.user_id else None,
        actor_label=actor.label,
        channel=actor.channel,
        action=action,
        from_status=from_status,
        to_status=to_status,
        message=message,
        **links,
    )


def _application_id(request: ClientRequest | RestoreRequest) -> int:
    if isinstance(request, ClientRequest):
        return request.application_id
    return request.backup.client.application_id
