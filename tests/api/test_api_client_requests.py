"""Client requests through the API: fields, the default name, the one-time enrolment token, decisions."""

from __future__ import annotations

import pytest

from catalog.models import BackupClient
from requests_app.choices import RequestStatus
from requests_app.models import AuditEvent, ClientRequest
from tests import factories
from tests.api.contract import CLIENT_REQUEST_FIELDS as FIELDS
from tests.helpers import key_client
from tests.requests.factories import submit_client

URL = "/api/v1/client-requests/"

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


def test_auto_approved_request_says_why_and_holds_no_token(owner_api, app, auto_policy):
    response = owner_api.post(URL, body(app, auto_policy), format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == FIELDS
    request = ClientRequest.objects.get(pk=data["id"])
    assert data == {
        "id": request.pk,
        "action": "protect",
        "status": "approved",
        "needs_approval": False,
        "approval_rule": "New clients on Silver are approved automatically.",
        "application": "orders",
        "hostname": "db01.example.com",
        "name": "db01-postgresql",
        "plugin": "postgresql",
        "options": {"database": "orders", "port": 5432},
        "policy": "Silver",
        "justification": "The orders database goes live on Monday.",
        "external_ref": "CHG0004321",
        "client": None,  # not provisioned until the agent enrols
        "error": "",
        "created_at": data["created_at"],
        "updated_at": data["updated_at"],
    }


def test_the_requester_issues_a_one_time_enrol_command_with_the_allow_list(owner_api, app, auto_policy):
    created = owner_api.post(URL, body(app, auto_policy), format="json").json()

    response = owner_api.post(f"{URL}{created['id']}/enrolment-token/")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["token"].startswith("bpe_")
    request = ClientRequest.objects.select_related("policy__storage_target").get(pk=created["id"])
    root = request.policy.storage_target.location
    assert data["enrol_command"] == (
        f"backup-agent enrol --server http://127.0.0.1:8000 --token {data['token']} "
        f"--hostname db01.example.com --allow-database postgresql:orders --allow-storage {root}"
    )
    # Stored hashed only: the clear token is nowhere in the database.
    assert request.enrolment.token_hash != data["token"]
    assert request.events.filter(action="enrolment_token_issued").exists()
    assert not AuditEvent.objects.filter(message__contains=data["token"]).exists()
    assert data["token"] not in str(owner_api.get(f"{URL}{created['id']}/").json())


def test_a_new_token_voids_the_previous_one(owner_api, app, auto_policy):
    from catalog.errors import InvalidEnrolment
    from catalog.services import agents

    created = owner_api.post(URL, body(app, auto_policy), format="json").json()
    first = owner_api.post(f"{URL}{created['id']}/enrolment-token/").json()["token"]
    second = owner_api.post(f"{URL}{created['id']}/enrolment-token/").json()["token"]

    with pytest.raises(InvalidEnrolment):
        agents.enrol(token=first, hostname="db01.example.com", version="", plugins=[])
    agent, _ = agents.enrol(token=second, hostname="db01.example.com", version="", plugins=[])
    assert list(agent.applications.all()) == [app]


def test_only_the_requester_or_the_team_issues_the_token(owner, admin_api, app, auto_policy, owner_api):
    created = owner_api.post(URL, body(app, auto_policy), format="json").json()
    url = f"{URL}{created['id']}/enrolment-token/"
    co_owner = factories.UserFactory(username="co_owner")
    app.owners.add(co_owner)

    refused = key_client(co_owner, name="Co-owner's integration").post(url)

    assert refused.status_code == 403
    assert admin_api.post(url).status_code == 201


def test_an_idempotent_replay_never_holds_the_token(owner_api, app, auto_policy):
    from requests_app.models import IdempotencyRecord

    created = owner_api.post(URL, body(app, auto_policy), format="json").json()
    url = f"{URL}{created['id']}/enrolment-token/"

    first = owner_api.post(url, HTTP_IDEMPOTENCY_KEY="enrol-1")
    replay = owner_api.post(url, HTTP_IDEMPOTENCY_KEY="enrol-1")

    assert first.status_code == 201
    assert (replay.status_code, replay.json()["code"]) == (409, "shown_once")
    token = first.json()["token"]
    assert all(token not in str(record.response) for record in IdempotencyRecord.objects.all())


def test_once_the_agent_enrolled_the_request_names_its_client(
    owner_api, app, auto_policy, django_capture_on_commit_callbacks
):
    from catalog.services import agents

    created = owner_api.post(URL, body(app, auto_policy), format="json").json()
    token = owner_api.post(f"{URL}{created['id']}/enrolment-token/").json()["token"]

    with django_capture_on_commit_callbacks(execute=True):
        agents.enrol(token=token, hostname="db01.example.com", version="1", plugins=["postgresql"])
    data = owner_api.get(f"{URL}{created['id']}/").json()

    request = ClientRequest.objects.get(pk=created["id"])
    assert data["status"] == "provisioned"
    assert data["client"] == request.client_id and BackupClient.objects.filter(pk=request.client_id).exists()
    assert owner_api.post(f"{URL}{created['id']}/enrolment-token/").status_code == 409


def test_a_host_of_the_same_application_is_provisioned_at_once(owner_api, app, auto_policy, mine):
    response = owner_api.post(
        URL, body(app, auto_policy, hostname=mine.agent.hostname, name="orders-db"), format="json"
    )

    data = response.json()
    assert (data["status"], data["name"]) == ("provisioned", "orders-db")
    assert BackupClient.objects.get(pk=data["client"]).agent == mine.agent


def test_manual_policy_waits_for_the_backup_team_then_the_requester_gets_the_token(
    owner_api, admin_api, app, manual_policy
):
    created = owner_api.post(URL, body(app, manual_policy), format="json").json()
    assert (created["status"], created["needs_approval"]) == ("submitted", True)
    assert owner_api.post(f"{URL}{created['id']}/enrolment-token/").status_code == 409

    approved = admin_api.post(f"{URL}{created['id']}/approve/")

    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert owner_api.post(f"{URL}{created['id']}/enrolment-token/").status_code == 201


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
