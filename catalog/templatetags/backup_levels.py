"""Template filters for backup levels (catalog/levels.py): a policy's scheme, a client's levels."""

from __future__ import annotations

from django import template

from catalog import levels

register = template.Library()


@register.filter
def level_scheme(policy) -> str:
    """ "full every 7 days", "fulls only"."""
    return levels.level_scheme(policy)


@register.filter
def level_description(policy) -> str:
    """ "A full backup every 7 days; incremental backups (what changed) in between." """
    return levels.level_description(policy)


@register.filter
def client_levels(client) -> str:
    return levels.client_levels(client)


@register.simple_tag
def database_dumps_full() -> str:
    return levels.DATABASE_DUMPS_FULL
