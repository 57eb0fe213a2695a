"""Who may see what: the one place tenancy is decided.

Every catalog queryset inherits ``TenantQuerySet`` and names the path from its
model to ``Application``; views, API, admin and reports call ``visible_to``.
The backup team (superusers and the ``backup-admins`` group) sees everything;
an application owner (directly, or through the application's owner group) sees
only the objects of their applications; anybody else sees nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


def is_backup_team(user) -> bool:
    if not user or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: admin changelists ask once per row otherwise.
    cached = getattr(user, "_is_backup_team", None)
    if cached is None:
        cached = user.groups.filter(name=settings.PORTAL_BACKUP_TEAM_GROUP).exists()
        user._is_backup_team = cached
    return cached


def owned_application_ids(user) -> models.QuerySet:
    """A subquery of the ids of the applications ``user`` owns, directly or by group."""
    from catalog.models import Application

    return Application.objects.filter(
        models.Q(owners=user) | models.Q(owner_group__user=user)
    ).values("pk")


class TenantQuerySet(models.QuerySet):
    #: Lookup from this model to Application's primary key, e.g. "client__application".
    application_path: str = ""
    #: Whether owners may see rows that belong to no application (shared reference data).
    shared_with_owners: bool = False

    def visible_to(self, user) -> TenantQuerySet:
        if is_backup_team(user):
            return self
        if not user or not user.is_authenticated or not user.is_active:
            return self.none()
        return self.owned_by(user)

    def owned_by(self, user) -> TenantQuerySet:
        """Rows an application owner may see; subclasses with other paths override this."""
        if self.shared_with_owners:
            return self
        if not self.application_path:
            return self.none()
        return self.filter(**{f"{self.application_path}__in": owned_application_ids(user)})
