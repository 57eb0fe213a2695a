"""Who may add, change, delete and view in every admin, in one table.

The permission code is spread over CatalogAdmin (the backup team needs no model
permissions), the mixins of catalog.admin_mixins (records nobody edits, superusers
included) and a few admins of their own; this table is what it adds up to.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory

from requests_app.models import ApiKey
from tests import factories

APPS = ("catalog", "requests_app", "reports")
ALL = {"add", "change", "delete", "view"}
VIEW = {"view"}

#: What a member of the backup team (staff, not a superuser, no model permissions) may do,
#: per admin (an inline as "model/Inline"); "change" is on an object, not on the changelist.
BACKUP_TEAM = {
    "catalog.CostCenter": ALL,
    "catalog.Application": ALL,
    "catalog.StorageTarget": ALL,
    "catalog.ProtectionPolicy": ALL,
    "catalog.Agent": ALL,
    "catalog.Agent/AgentEventInline": VIEW,  # the team reads who shared, re-keyed, revoked
    "catalog.EnrolmentToken": {"change", "delete", "view"},  # issued by the services
    "catalog.BackupClient": ALL,
    "catalog.Job": VIEW,
    "catalog.Backup": {"change", "view"},  # legal hold only; the retention flow deletes
    "catalog.Alert": VIEW,  # acknowledged by an action, not edited
    "catalog.OrphanArchive": VIEW,  # the agents' reports add and forget them
    "requests_app.ClientRequest": VIEW,
    "requests_app.ClientRequest/AuditEventInline": VIEW,
    "requests_app.RestoreRequest": VIEW,
    "requests_app.RestoreRequest/AuditEventInline": VIEW,
    "requests_app.AuditEvent": VIEW,
    "requests_app.ApiKey": {"add", "view"},  # plus "change" on the changelist, for the Revoke action
    "requests_app.WebhookSubscription": ALL,
    "requests_app.WebhookDelivery": VIEW,
    "requests_app.WebhookDelivery/WebhookAttemptInline": VIEW,
    "reports.Report": VIEW,
    "reports.PolicyPrice": ALL,
}

#: A superuser may do what the team may.
SUPERUSER = BACKUP_TEAM


def admins():
    """(name, admin, is_inline) for every registered admin of APPS and its inlines."""
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in APPS:
            continue
        yield model._meta.label, model_admin, False
        for inline_class in model_admin.inlines:
            yield f"{model._meta.label}/{inline_class.__name__}", inline_class(model, admin.site), True


def allowed(user) -> dict[str, set[str]]:
    request = RequestFactory().get("/admin/")
    request.user = user
    table = {}
    for name, model_admin, inline in admins():
        obj = model_admin.model()
        can = {
            "add": model_admin.has_add_permission(*((request, obj) if inline else (request,))),
            "change": model_admin.has_change_permission(request, obj),
            "delete": model_admin.has_delete_permission(request, obj),
            "view": model_admin.has_view_permission(request, obj),
        }
        table[name] = {perm for perm, yes in can.items() if yes}
    return table


def test_backup_team_permissions_per_admin(backup_admin):
    assert allowed(backup_admin) == BACKUP_TEAM


def test_superuser_permissions_per_admin(superuser):
    assert allowed(superuser) == SUPERUSER


def test_model_permissions_do_not_open_the_read_only_admins(db):
    """Staff outside the team with every model permission: Django's rules, minus what nobody may do."""
    auditor = factories.UserFactory(username="auditor", is_staff=True)
    auditor.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=APPS))
    auditor = type(auditor).objects.get(pk=auditor.pk)  # no cached permissions

    assert allowed(auditor) == {**SUPERUSER, "requests_app.ApiKey": set()}  # API keys: the team only


@pytest.mark.parametrize("user", ["owner", "staff"])
def test_anybody_else_may_do_nothing(request, db, user):
    person = request.getfixturevalue("owner") if user == "owner" else factories.UserFactory(is_staff=True)
    assert allowed(person) == dict.fromkeys(BACKUP_TEAM, set())


def test_api_keys_are_revoked_from_the_changelist_never_edited(backup_admin):
    request = RequestFactory().get("/admin/")
    request.user = backup_admin
    key_admin = admin.site.get_model_admin(ApiKey)
    assert key_admin.has_change_permission(request) is True
    assert key_admin.has_change_permission(request, ApiKey()) is False
