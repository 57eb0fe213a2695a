"""Who did something, and through which channel: a person, an API key, an agent, or the system."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.tenancy import is_backup_team
from identity import mfa as identity_mfa
from requests_app.choices import ActorKind, Channel


@dataclass(frozen=True)
class Actor:
    kind: str
    channel: str
    label: str
    user: object | None = None  # the Django user behind a person or an API key
    api_key: object | None = None  # the integration, when the actor is one
    # May take the backup team's four-eyes decisions without further proof: a person whose session
    # passed MFA (identity.mfa), an integration key, the system. Decided at the door, checked by
    # the services (identity.mfa.require_for_actor).
    mfa: bool = False

    @classmethod
    def person(cls, user, channel: str = Channel.WEB, *, mfa: bool = False) -> Actor:
        return cls(ActorKind.USER, channel, user.get_username(), user, mfa=mfa)

    @classmethod
    def signed_in(cls, request, channel: str) -> Actor:
        """The person of a session (web, admin, API): what the session proved comes with them."""
        return cls.person(request.user, channel, mfa=identity_mfa.session_passed_mfa(request))

    @classmethod
    def integration(cls, key) -> Actor:
        # An integration user's key approves without a person's MFA; any other key does not.
        return cls(ActorKind.API_KEY, Channel.API, f"API key {key.name}", key.user, key, mfa=key.integration)

    @classmethod
    def agent(cls, hostname: str) -> Actor:
        return cls(ActorKind.AGENT, Channel.AGENT, hostname)

    @classmethod
    def system(cls) -> Actor:
        return cls(ActorKind.SYSTEM, Channel.SYSTEM, "system", mfa=True)

    @property
    def is_backup_team(self) -> bool:
        return self.kind == ActorKind.SYSTEM or is_backup_team(self.user)

    @property
    def user_id(self) -> int | None:
        return getattr(self.user, "pk", None)
