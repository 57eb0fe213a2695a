"""Permission mixins shared by every admin of the portal: catalog's, requests_app's, reports'.

They live in catalog, the bottom of the dependency order, so any app may import them.
Put a mixin before the admin's base class (``class JobAdmin(ReadOnlyAdminMixin, CatalogAdmin)``):
it answers "no" whoever asks, superusers included, whatever model permissions they hold.
The ``obj=None`` parameter serves both ModelAdmin (``has_add_permission(request)``) and inlines
(``has_add_permission(request, obj)``).
"""

from __future__ import annotations

from catalog.tenancy import is_backup_team


class NoAddMixin:
    """Rows are made by the services, the portal or the API, never typed in here."""

    def has_add_permission(self, request, obj=None):
        return False


class NoChangeMixin:
    """Rows are records: the services own what they say."""

    def has_change_permission(self, request, obj=None):
        return False


class NoDeleteMixin:
    """Rows stay on record (other rows or people outside name them)."""

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdminMixin(NoAddMixin, NoChangeMixin, NoDeleteMixin):
    """View only: what the admin shows is written by the machine and read by people."""


class BackupTeamViewMixin:
    """The backup team sees it without model permissions; anybody else needs Django's view permission.

    For inlines: CatalogAdmin gives the team the same on the admins themselves.
    """

    def has_view_permission(self, request, obj=None):
        return is_backup_team(request.user) or super().has_view_permission(request, obj)
