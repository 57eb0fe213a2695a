"""The backup team's four-eyes actions need a session that passed MFA, through every door.

Approving and rejecting (client and restore requests) in the admin and through the API with a
session; giving a host to an application in the agent admin. An API key approves only when it is
an integration user's key. ``PORTAL_MFA_FOR_APPROVALS=false`` is the behaviour from before MFA.
"""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from catalog.choices import AgentAction
from catalog.models import Agent, Job
from requests_app.choices import RequestStatus
from requests_app.models import ApiKey, AuditEvent, ClientRequest, RestoreRequest
from tests import factories
from tests.helpers import key_client
from tests.identity.totp import enrolled, mark_oidc_amr, pass_mfa
from tests.requests.factories import submit_client, submit_restore

pytestmark = pytest.mark.django_db

NEEDS_MFA = "needs a session that passed multi-factor authentication"


@pytest.fixture(autouse=True)
def mfa_on(settings):
    settings.PORTAL_MFA_FOR_APPROVALS = True


@pytest.fixture
def restore(owner, app):
    backup = factories.BackupFactory(client__application=app, client__name="orders-db")
    return submit_restore(owner, backup=backup, overwrite=True)


@pytest.fixture
def client_request(owner, app):
    return submit_client(owner, application=app, name="orders-files", hostname="web01.example.com")


def admin_url(obj, view: str) -> str:
    return reverse(f"admin:requests_app_{obj._meta.model_name}_{view}", args=[obj.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def unchanged(obj) -> tuple:
    fresh = type(obj).objects.get(pk=obj.pk)
    return fresh.status, fresh.decided_by_id, AuditEvent.objects.count(), Job.objects.count()


# --- The admin ------------------------------------------------------------------------------------


def test_an_approval_without_mfa_is_refused_with_a_link_and_changes_nothing(team_client, restore):
    before = unchanged(restore)

    response = team_client.post(admin_url(restore, "approve"), follow=True)

    assert unchanged(restore) == before
    assert restore.status == RequestStatus.SUBMITTED
    [message] = messages_of(response)
    assert NEEDS_MFA in message
    assert 'href="/account/mfa/verify/?next=' in response.text


def test_an_approval_after_a_totp_code_is_accepted(team_client, backup_admin, restore):
    assert pass_mfa(team_client, enrolled(backup_admin)).status_code == 302

    response = team_client.post(admin_url(restore, "approve"), follow=True)

    restore.refresh_from_db()
    assert restore.status == RequestStatus.APPROVED
    assert restore.decided_by == backup_admin
    assert messages_of(response)[-1].startswith(f"Restore request #{restore.pk} is approved.")


def test_an_approval_from_a_session_the_identity_provider_vouched_for_is_accepted(
    team_client, client_request
):
    mark_oidc_amr(team_client)

    team_client.post(admin_url(client_request, "approve"))

    assert ClientRequest.objects.get(pk=client_request.pk).status != RequestStatus.SUBMITTED


def test_a_rejection_needs_mfa_too(team_client, backup_admin, client_request):
    before = unchanged(client_request)

    reason = {"reason": "Not this quarter."}
    refused = team_client.post(admin_url(client_request, "reject"), reason, follow=True)

    assert unchanged(client_request) == before
    assert NEEDS_MFA in messages_of(refused)[-1]

    pass_mfa(team_client, enrolled(backup_admin))
    team_client.post(admin_url(client_request, "reject"), reason)

    assert ClientRequest.objects.get(pk=client_request.pk).status == RequestStatus.REJECTED


def test_the_bulk_approve_action_needs_mfa(team_client, restore, client_request):
    changelist = reverse("admin:requests_app_restorerequest_changelist")

    response = team_client.post(
        changelist, {"action": "approve_selected", "_selected_action": [restore.pk]}, follow=True
    )

    assert RestoreRequest.objects.get(pk=restore.pk).status == RequestStatus.SUBMITTED
    assert NEEDS_MFA in messages_of(response)[-1]


# --- Sharing a host in the agent admin ------------------------------------------------------------


def share(client, agent, *applications):
    return client.post(
        reverse("admin:catalog_agent_change", args=[agent.pk]),
        {
            "applications": [app.pk for app in applications],
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
        },
    )


def test_giving_a_host_to_another_application_needs_mfa(team_client, backup_admin, app, other_app):
    agent = factories.AgentFactory(hostname="hr01.example.com")
    agent.applications.set([other_app])

    refused = share(team_client, agent, other_app, app)

    assert refused.status_code == 200
    assert NEEDS_MFA in refused.text and 'href="/account/mfa/verify/?next=' in refused.text
    assert list(Agent.objects.get(pk=agent.pk).applications.all()) == [other_app]
    assert not agent.events.filter(action=AgentAction.SHARED).exists()

    pass_mfa(team_client, enrolled(backup_admin))
    accepted = share(team_client, agent, other_app, app)

    assert accepted.status_code == 302
    assert set(Agent.objects.get(pk=agent.pk).applications.all()) == {app, other_app}
    assert agent.events.filter(action=AgentAction.SHARED, actor_label="backup_admin").exists()


def test_a_session_the_identity_provider_vouched_for_may_share_a_host(team_client, app, other_app):
    agent = factories.AgentFactory(hostname="hr01.example.com")
    agent.applications.set([other_app])
    mark_oidc_amr(team_client)

    assert share(team_client, agent, other_app, app).status_code == 302
    assert set(agent.applications.all()) == {app, other_app}


def test_taking_an_application_away_from_a_host_needs_no_mfa(team_client, app, other_app):
    agent = factories.AgentFactory(hostname="hr01.example.com")
    agent.applications.set([app, other_app])

    assert share(team_client, agent, other_app).status_code == 302
    assert list(agent.applications.all()) == [other_app]


# --- The API --------------------------------------------------------------------------------------


def api_approve(api, obj):
    return api.post(f"/api/v1/{obj._meta.model_name.replace('request', '-requests')}/{obj.pk}/approve/")


def test_a_key_that_is_not_an_integrations_cannot_approve(backup_admin, restore):
    api = key_client(backup_admin)
    assert api.api_key.integration is False
    before = unchanged(restore)

    response = api_approve(api, restore)

    assert response.status_code == 403
    assert response.json()["code"] == "mfa_required"
    assert "is not an integration key" in response.json()["detail"]
    assert unchanged(restore) == before


def test_an_integration_users_key_approves(backup_admin, restore):
    api = key_client(backup_admin)
    ApiKey.objects.filter(pk=api.api_key.pk).update(integration=True)

    response = api_approve(api, restore)

    assert response.status_code == 200
    assert response.json()["status"] == RequestStatus.APPROVED


def test_a_key_that_is_not_an_integrations_cannot_reject(backup_admin, client_request):
    api = key_client(backup_admin)

    url = f"/api/v1/client-requests/{client_request.pk}/reject/"
    response = api.post(url, {"reason": "No."}, format="json")

    assert response.status_code == 403
    assert ClientRequest.objects.get(pk=client_request.pk).status == RequestStatus.SUBMITTED


def test_a_session_on_the_api_needs_mfa_like_the_admin(team_client, backup_admin, restore):
    refused = api_approve(team_client, restore)
    assert refused.status_code == 403
    assert refused.json()["code"] == "mfa_required"
    assert "/account/mfa/verify/" in refused.json()["detail"]

    pass_mfa(team_client, enrolled(backup_admin))

    assert api_approve(team_client, restore).status_code == 200


def test_the_api_key_admin_flags_and_filters_integration_keys(team_client, backup_admin):
    response = team_client.post(
        reverse("admin:requests_app_apikey_add"),
        {"name": "ServiceNow", "user": backup_admin.pk, "integration": "on"},
    )

    assert response.status_code == 302
    assert ApiKey.objects.get(name="ServiceNow").integration is True
    listing = team_client.get(reverse("admin:requests_app_apikey_changelist") + "?integration__exact=1")
    assert [key.name for key in listing.context["cl"].result_list] == ["ServiceNow"]


# --- Off: as before MFA ---------------------------------------------------------------------------


def test_with_the_setting_off_approvals_need_no_mfa(
    settings, team_client, backup_admin, restore, app, other_app
):
    settings.PORTAL_MFA_FOR_APPROVALS = False
    agent = factories.AgentFactory(hostname="hr01.example.com")
    agent.applications.set([other_app])

    team_client.post(admin_url(restore, "approve"))
    shared = share(team_client, agent, other_app, app)
    keyed = submit_restore(
        factories.UserFactory(), backup=factories.BackupFactory(client__application=app), overwrite=True
    )
    by_key = api_approve(key_client(backup_admin), keyed)

    assert RestoreRequest.objects.get(pk=restore.pk).status == RequestStatus.APPROVED
    assert shared.status_code == 302
    assert by_key.status_code == 200


def test_mfa_is_on_unless_the_environment_turns_it_off(monkeypatch):
    import importlib

    import portal.settings

    monkeypatch.delenv("PORTAL_MFA_FOR_APPROVALS", raising=False)
    assert importlib.reload(portal.settings).PORTAL_MFA_FOR_APPROVALS is True
    monkeypatch.setenv("PORTAL_MFA_FOR_APPROVALS", "false")
    assert importlib.reload(portal.settings).PORTAL_MFA_FOR_APPROVALS is False


def test_create_api_key_issues_an_integration_key_only_when_asked(backup_admin, restore):
    from io import StringIO

    from django.core.management import call_command

    plain, integration = StringIO(), StringIO()
    call_command("create_api_key", "backup_admin", "--name", "Reads", stdout=plain)
    call_command("create_api_key", "backup_admin", "--name", "Approves", "--integration", stdout=integration)

    assert [(k.name, k.integration) for k in ApiKey.objects.order_by("name")] == [
        ("Approves", True), ("Reads", False)
    ]
