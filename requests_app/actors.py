"""Who did something, and through which channel: a person, an API key, an agent, or the system."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.tenancy import is_backup_team
from requests_app.choices import ActorKind, Channel


@dataclass(frozen=True)
class Actor:
    kind: str
    channel: str
    label: str
    user: object | None = None  # the Django user behind a person or an API key
    api_key: object | None = None  # the integration, when the actor is one

    @classmethod
    def person(cls, user, channel: str = Channel.WEB) -> Actor:
        return cls(ActorKind.USER, channel, user.get_username(), user)

    @classmethod
    def integration(cls, key) -> Actor:
        return cls(ActorKind.API_KEY, Channel.API, f"API key {key.name}", key.user, key)

    @classmethod
    def agent(cls, hostname: str) -> Actor:
        return cls(ActorKind.AGENT, Channel.AGENT, hostname)

    @classmethod
    def system(cls) -> Actor:
        return cls(ActorKind.SYSTEM, Channel.SYSTEM, "system")

    @property
    def is_backup_team(self) -> bool:
        return self.kind == ActorKind.SYSTEM or is_backup_team(self.user)

    @property
    def user_id(self) -> int | None:
        return getattr(self.user, "pk", None)
