"""API keys in the admin: shown once, revoked, never deleted; the command prints the key."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from requests_app.models import ApiKey


def test_backup_team_creates_a_key_and_sees_it_once(client, backup_admin, owner):
    client.force_login(backup_admin)
    response = client.post(
        reverse("admin:requests_app_apikey_add"), {"name": "ServiceNow prod", "user": owner.pk}, follow=True
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    shown = next(m.message for m in response.context["messages"] if "copy it now" in m.message)
    clear = shown.split(": ", 1)[1].split(" ")[0]
    assert ApiKey.objects.authenticate(clear) == key
    assert (
        clear not in client.get(reverse("admin:requests_app_apikey_change", args=[key.pk])).content.decode()
    )


def test_revoke_action_and_no_delete(client, backup_admin, owner):
    key, clear = ApiKey.issue(user=owner, name="Jira")
    client.force_login(backup_admin)
    client.post(
        reverse("admin:requests_app_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}
    )
    assert ApiKey.objects.authenticate(clear) is None
    assert client.get(reverse("admin:requests_app_apikey_delete", args=[key.pk])).status_code == 403


def test_owner_cannot_manage_keys(client, owner):
    owner.is_staff = True
    owner.save()
    client.force_login(owner)
    assert client.get(reverse("admin:requests_app_apikey_changelist")).status_code == 403


def test_create_api_key_prints_only_the_key(owner):
    out = StringIO()
    call_command("create_api_key", "owner", "--name", "ServiceNow", stdout=out)
    (line,) = out.getvalue().splitlines()
    assert ApiKey.objects.authenticate(line).name == "ServiceNow"
    with pytest.raises(CommandError):
        call_command("create_api_key", "nobody", "--name", "x", stdout=StringIO())
