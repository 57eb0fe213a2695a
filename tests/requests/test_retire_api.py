"""Retiring a client through the ticketing API: POST /client-requests/ with ``action: retire``."""

from __future__ import annotations

import pytest
from django.db import IntegrityError

from catalog.choices import ClientStatus
from catalog.models import BackupClient
from requests_app.models import ClientRequest
from tests.api.contract import CLIENT_REQUEST_FIELDS
from tests.helpers import key_client

URL = "/api/v1/client-requests/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle(fresh_cache):
    """Throttle counters live in the cache, which outlives a test."""


def retire(client, **fields) -> dict:
    return {"action": "retire", "client": client.pk, **fields}


def test_submit_then_another_person_approves(owner, backup_admin, mine):
    owner_api, admin_api = key_client(owner), key_client(backup_admin, name="Team automation")

    response = owner_api.post(
        URL,
        retire(mine.client, justification="Decommissioned.", external_ref="CHG7"),
        format="json",
    )

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == CLIENT_REQUEST_FIELDS
    assert (data["action"], data["status"], data["needs_approval"], data["client"]) == (
        "retire", "submitted", True, mine.client.pk
    )
    assert (data["hostname"], data["name"], data["application"]) == (
        mine.client.hostname, mine.client.name, "orders"
    )
    # The same ticket again: the same request, not a second one.
    again = owner_api.post(URL, retire(mine.client, external_ref="CHG7"), format="json")
    assert (again.status_code, again.json()["id"]) == (200, data["id"])
    # The requester cannot approve their own (and an owner is not the backup team).
    assert owner_api.post(f"{URL}{data['id']}/approve/").status_code == 403

    approved = admin_api.post(f"{URL}{data['id']}/approve/")

    assert approved.status_code == 200, approved.json()
    assert approved.json()["status"] == "completed"
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.RETIRED
    mine.agent.refresh_from_db()
    assert mine.agent.revoked_at is not None
    assert owner_api.get(f"{URL}?status=completed").json()["results"][0]["action"] == "retire"


def test_a_second_open_request_is_refused(owner, mine):
    owner_api = key_client(owner)
    assert owner_api.post(URL, retire(mine.client), format="json").status_code == 201

    response = owner_api.post(URL, retire(mine.client), format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"client": [f"A request to retire {mine.client} is already open."]}


def test_another_applications_client_does_not_exist_for_the_caller(other_owner, mine):
    response = key_client(other_owner).post(URL, retire(mine.client), format="json")

    assert response.status_code == 400
    assert "does not exist" in " ".join(response.json()["errors"]["client"])
    assert not ClientRequest.objects.exists()


def test_what_each_action_requires(owner, app):
    owner_api = key_client(owner)

    retire = owner_api.post(URL, {"action": "retire"}, format="json")
    protect = owner_api.post(URL, {"hostname": "db01.example.com"}, format="json")

    assert retire.status_code == 400 and retire.json()["errors"] == {"client": ["This field is required."]}
    assert protect.status_code == 400
    assert set(protect.json()["errors"]) == {"application", "plugin", "options", "policy"}


def test_a_retire_under_a_protect_requests_ticket_is_refused_not_answered_with_the_other(owner, mine):
    owner_api = key_client(owner)
    protect = ClientRequest.objects.create(
        application=mine.client.application, hostname="db9.example.com", name="db9", plugin="files",
        options={"paths": ["/srv"]}, policy=mine.client.policy, requester=owner,
        api_key=owner.api_keys.get(), external_ref="CHG9",
    )  # fmt: skip

    response = owner_api.post(URL, retire(mine.client, external_ref="CHG9"), format="json")

    assert response.status_code == 400, response.json()
    assert f"client request #{protect.pk}" in str(response.json())
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.ACTIVE
    assert ClientRequest.objects.count() == 1


def test_a_retire_losing_the_race_to_a_protect_request_under_its_ticket_is_refused(owner, mine, monkeypatch):
    """The ticket was free when checked; a protect request under it committed before the retire's insert."""
    from requests_app import services

    owner_api = key_client(owner)
    key = owner.api_keys.get()

    def racing_protect(**_):
        protect = ClientRequest.objects.create(
            application=mine.client.application, hostname="db9.example.com", name="db9", plugin="files",
            options={"paths": ["/srv"]}, policy=mine.client.policy, requester=owner, api_key=key,
            external_ref="CHG10",
        )  # fmt: skip
        raise IntegrityError(f"clientrequest_unique_ref_per_integration (#{protect.pk})")

    monkeypatch.setattr(services, "submit_retire", racing_protect)

    response = owner_api.post(URL, retire(mine.client, external_ref="CHG10"), format="json")

    assert response.status_code == 400, response.json()
    assert "which asks to protect" in str(response.json())
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.ACTIVE
