"""Client requests through the API: fields, the default name, the one-time enrolment token, decisions."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from catalog.models import BackupClient
from requests_app import services
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest
from tests import factories
from tests.api.conftest import key_client
from tests.requests.factories import submit_client

URL = "/api/v1/client-requests/"
FIELDS = {
    "id",
    "status",
    "needs_approval",
    "application",
    "hostname",
    "name",
    "plugin",
    "options",
    "policy",
    "justification",
    "external_ref",
    "client",
    "enrolment_token",
    "error",
    "created_at",
    "updated_at",
}

pytestmark = pytest.mark.django_db


def body(app, tier, **fields) -> dict:
    return {
        "application": app.slug,
        "hostname": "DB01.example.com",
        "plugin": "postgresql",
        "options": {"database": "orders", "port": 5432},
        "policy": tier.name,
        "justification": "The orders database goes live on Monday.",
        "external_ref": "CHG0004321",
        **fields,
    }


def test_auto_approved_request_shows_its_requester_the_enrolment_token(owner_api, app, auto_policy):
    response = owner_api.post(URL, body(app, auto_policy), format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == FIELDS
    request = ClientRequest.objects.get(pk=data["id"])
    assert data == {
        "id": request.pk,
        "status": "approved",
        "needs_approval": False,
        "application": "orders",
        "hostname": "db01.example.com",
        "name": "db01-postgresql",
        "plugin": "postgresql",
        "options": {"database": "orders", "port": 5432},
        "policy": "Silver",
        "justification": "The orders database goes live on Monday.",
        "external_ref": "CHG0004321",
        "client": None,  # not provisioned until the agent enrols
        "enrolment_token": request.enrolment_secret,
        "error": "",
        "created_at": data["created_at"],
        "updated_at": data["updated_at"],
    }
    assert len(data["enrolment_token"]) > 20


def test_the_token_is_the_requesters_alone(owner, owner_api, admin_api, app, auto_policy):
    created = owner_api.post(URL, body(app, auto_policy), format="json").json()
    url = f"{URL}{created['id']}/"
    session = APIClient()
    session.force_login(owner)

    assert owner_api.get(url).json()["enrolment_token"] == created["enrolment_token"]
    assert session.get(url).json()["enrolment_token"] == created["enrolment_token"]  # the same person
    assert key_client(owner, name="Another integration").get(url).json()["enrolment_token"] is None
    assert admin_api.get(url).json()["enrolment_token"] is None


def test_once_the_agent_enrolled_the_token_is_gone_and_the_client_named(owner_api, app, auto_policy):
    created = owner_api.post(URL, body(app, auto_policy), format="json").json()
    request = ClientRequest.objects.get(pk=created["id"])

    services.mark_provisioned(request.enrolment_id)
    data = owner_api.get(f"{URL}{request.pk}/").json()

    assert data["status"] == "provisioned"
    assert data["enrolment_token"] is None
    assert data["client"] == request.client_id and BackupClient.objects.filter(pk=request.client_id).exists()


def test_a_host_with_an_agent_is_provisioned_at_once(owner_api, app, auto_policy, mine):
    response = owner_api.post(
        URL, body(app, auto_policy, hostname=mine.agent.hostname, name="orders-db"), format="json"
    )

    data = response.json()
    assert (data["status"], data["name"], data["enrolment_token"]) == ("provisioned", "orders-db", None)
    assert BackupClient.objects.get(pk=data["client"]).agent == mine.agent


def test_manual_policy_waits_for_the_backup_team_then_the_requester_gets_the_token(
    owner_api, admin_api, app, manual_policy
):
    created = owner_api.post(URL, body(app, manual_policy), format="json").json()
    assert (created["status"], created["needs_approval"], created["enrolment_token"]) == (
        "submitted",
        True,
        None,
    )

    approved = admin_api.post(f"{URL}{created['id']}/approve/")

    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["enrolment_token"] is None  # the approver is not the requester
    assert owner_api.get(f"{URL}{created['id']}/").json()["enrolment_token"]


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"options": {"paths": ["/srv"]}}, "options", "Unknown option(s): paths"),
        ({"options": {"database": "orders", "port": 70000}}, "options", "port: The port must be a number"),
        ({"options": ["not", "an", "object"]}, "options", "Expected a dictionary"),
        ({"plugin": "tape"}, "plugin", "is not a valid choice"),
        ({"hostname": "not a host"}, "hostname", "Enter a valid host name"),
        ({"policy": "Platinum"}, "policy", "does not exist"),
        ({"application": "payroll"}, "application", "does not exist"),
        ({"name": "Not A Slug"}, "name", "Enter a valid"),
    ],
)
def test_invalid_fields_are_400_with_field_errors(
    owner_api, app, other_app, auto_policy, fields, field, message
):
    response = owner_api.post(URL, body(app, auto_policy, **fields), format="json")

    assert response.status_code == 400, response.json()
    assert message in " ".join(response.json()["errors"][field])
    assert not ClientRequest.objects.exists()


def test_a_name_already_taken_is_a_field_error(owner_api, app, auto_policy):
    factories.BackupClientFactory(application=app, name="db01-postgresql")

    response = owner_api.post(URL, body(app, auto_policy), format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["errors"] == {"name": ["orders already has a client named db01-postgresql."]}


def test_another_tenants_request_is_404_and_missing_from_lists(other_api, owner, app, manual_policy):
    request = submit_client(owner, application=app, policy=manual_policy)

    assert other_api.get(f"{URL}{request.pk}/").status_code == 404
    assert other_api.post(f"{URL}{request.pk}/cancel/").status_code == 404
    assert other_api.get(URL).json()["count"] == 0


def test_decisions_follow_the_rules(owner_api, admin_api, owner, backup_admin, app, manual_policy):
    by_owner = submit_client(owner, application=app, policy=manual_policy)
    by_admin = submit_client(backup_admin, application=app, policy=manual_policy)

    assert owner_api.post(f"{URL}{by_owner.pk}/approve/").json()["code"] == "forbidden"
    assert admin_api.post(f"{URL}{by_admin.pk}/approve/").json()["code"] == "four_eyes"
    rejected = admin_api.post(f"{URL}{by_owner.pk}/reject/", {"reason": "Use Silver."}, format="json")
    assert rejected.json()["status"] == "rejected"
    assert owner_api.post(f"{URL}{by_owner.pk}/cancel/").status_code == 409
    assert ClientRequest.objects.get(pk=by_admin.pk).status == RequestStatus.SUBMITTED
