"""Agents authenticate with ``Authorization: Bearer <agent token>``; only the hash is stored."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions, permissions

from catalog.models import Agent


class AgentTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send exactly one token: 'Authorization: Bearer <token>'.")
        try:
            token = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("The token contains invalid characters.") from exc
        agent = Agent.objects.authenticate(token)
        if agent is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked agent token.")
        # The request acts as no user: the agent is the principal, in request.auth.
        return AnonymousUser(), agent

    def authenticate_header(self, request) -> str:
        return self.keyword


def agent_of(request) -> Agent | None:
    """The live agent of a well-formed ``Authorization: Bearer <token>``; None for anything else.

    For the poll's short door (catalog.agent_api.views.poll): whatever this does
    not take goes to the DRF view, whose authentication above explains the refusal.
    """
    try:
        found = AgentTokenAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed:
        return None
    return found[1] if found else None


class IsAgent(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Agent)
