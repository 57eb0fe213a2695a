"""Restore requests through the API: the contract's fields, the approval rules, tenancy and four eyes."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from catalog.choices import BackupStatus, JobKind, JobState
from requests_app.choices import ActorKind, Channel, RequestStatus
from requests_app.models import AuditEvent, RestoreRequest
from tests import factories
from tests.api.contract import RESTORE_REQUEST_FIELDS as FIELDS
from tests.helpers import key_client
from tests.requests.factories import submit_restore

URL = "/api/v1/restore-requests/"

pytestmark = pytest.mark.django_db


def body(estate, **fields) -> dict:
    return {
        "backup": estate.backup.pk,
        "target_agent": estate.agent.hostname,
        "target_location": "/srv/restore/2025-01-31",
        "overwrite": False,
        "reason": "Files deleted by mistake.",
        "external_ref": "INC0012345",
        **fields,
    }


def detail(pk: int, action: str = "") -> str:
    return f"{URL}{pk}/{action + '/' if action else ''}"


# --- Submitting ----------------------------------------------------------------------------------


def test_restore_to_a_new_location_is_approved_at_once_and_queues_a_job(owner_api, mine):
    response = owner_api.post(URL, body(mine), format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == FIELDS
    request = RestoreRequest.objects.get(pk=data["id"])
    assert data == {
        "id": request.pk,
        "status": "approved",
        "needs_approval": False,
        "approval_rule": "A restore to a new location on your own server is approved automatically.",
        "backup": mine.backup.pk,
        "target_agent": mine.agent.hostname,
        "target_location": "/srv/restore/2025-01-31",
        "overwrite": False,
        "paths": [],
        "reason": "Files deleted by mistake.",
        "external_ref": "INC0012345",
        "job": request.job_id,
        "error": "",
        "created_at": data["created_at"],
        "updated_at": data["updated_at"],
    }
    assert request.job.kind == JobKind.RESTORE and request.job.state == JobState.QUEUED
    assert request.api_key == owner_api.api_key
    submitted = AuditEvent.objects.get(restore_request=request, action="submitted")
    assert (submitted.actor_kind, submitted.channel) == (ActorKind.API_KEY, Channel.API)
    assert submitted.actor_label == "API key ServiceNow"


def test_overwriting_restore_waits_for_the_backup_team(owner_api, mine):
    response = owner_api.post(URL, body(mine, overwrite=True), format="json")

    assert response.status_code == 201
    data = response.json()
    assert (data["status"], data["needs_approval"], data["job"]) == ("submitted", True, None)


def test_minimal_body_takes_the_defaults(owner_api, mine):
    response = owner_api.post(
        URL,
        {"backup": mine.backup.pk, "target_agent": mine.agent.hostname.upper(), "target_location": "/srv/r"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["overwrite"], data["reason"], data["external_ref"]) == (False, "", "")
    assert data["target_agent"] == mine.agent.hostname


def test_session_user_submits_as_a_person_through_the_api(owner, mine):
    client = APIClient()
    client.force_login(owner)

    response = client.post(URL, body(mine), format="json")

    assert response.status_code == 201
    event = AuditEvent.objects.get(restore_request_id=response.json()["id"], action="submitted")
    assert (event.actor_kind, event.channel, event.actor_user) == (ActorKind.USER, Channel.API, owner)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("target_location", "relative/path", "not absolute"),
        ("target_location", "/srv/../etc", "must not contain '..'"),
        ("backup", 99_999_999, "does not exist"),
        ("target_agent", "nowhere.example.com", "does not exist"),
    ],
)
def test_invalid_fields_are_400_with_field_errors(owner_api, mine, field, value, message):
    response = owner_api.post(URL, body(mine, **{field: value}), format="json")

    assert response.status_code == 400
    data = response.json()
    assert data["code"] == "invalid"
    assert message in " ".join(data["errors"][field])
    assert not RestoreRequest.objects.exists()


def test_an_expired_backup_cannot_be_restored(owner_api, mine):
    mine.backup.status = BackupStatus.EXPIRED
    mine.backup.save(update_fields=["status"])

    response = owner_api.post(URL, body(mine), format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"backup": ["This backup is expired."]}


# --- Tenancy -------------------------------------------------------------------------------------


def test_another_tenants_backup_or_agent_in_the_body_looks_like_no_such_object(owner_api, mine, theirs):
    their_backup = owner_api.post(URL, body(mine, backup=theirs.backup.pk), format="json")
    missing_backup = owner_api.post(URL, body(mine, backup=theirs.backup.pk + 1000), format="json")
    their_agent = owner_api.post(URL, body(mine, target_agent=theirs.agent.hostname), format="json")

    assert their_backup.status_code == missing_backup.status_code == their_agent.status_code == 400
    assert their_backup.json()["errors"]["backup"] == [
        f'Invalid pk "{theirs.backup.pk}" - object does not exist.'
    ]
    assert "does not exist" in their_agent.json()["errors"]["target_agent"][0]
    assert not RestoreRequest.objects.exists()


def test_lists_show_the_callers_requests_only(
    owner_api, other_api, admin_api, owner, other_owner, mine, theirs
):
    own = submit_restore(owner, backup=mine.backup)
    submit_restore(other_owner, backup=theirs.backup)

    assert [r["id"] for r in owner_api.get(URL).json()["results"]] == [own.pk]
    assert len(other_api.get(URL).json()["results"]) == 1
    assert len(admin_api.get(URL).json()["results"]) == 2


@pytest.mark.parametrize("action", ["", "approve", "reject", "cancel"])
def test_another_tenants_request_is_404(other_api, owner, mine, action):
    request = submit_restore(owner, backup=mine.backup)

    response = (
        other_api.post(detail(request.pk, action), {"reason": "no"}, format="json")
        if action
        else (other_api.get(detail(request.pk)))
    )

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED


def test_detail_and_filters(owner_api, owner, mine):
    first = submit_restore(owner, backup=mine.backup, external_ref="INC1")
    submit_restore(owner, backup=mine.backup, external_ref="INC2")

    assert set(owner_api.get(detail(first.pk)).json()) == FIELDS
    found = owner_api.get(URL, {"external_ref": "INC1"}).json()["results"]
    assert [r["id"] for r in found] == [first.pk]
    assert owner_api.get(URL, {"status": "approved"}).json()["count"] == 0


# --- Deciding ------------------------------------------------------------------------------------


def test_backup_team_approves_through_the_api(admin_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)

    response = admin_api.post(detail(request.pk, "approve"))

    assert response.status_code == 200
    data = response.json()
    assert set(data) == FIELDS
    assert data["status"] == "approved" and data["job"] is not None
    event = AuditEvent.objects.get(restore_request=request, action="approved")
    assert (event.actor_kind, event.channel) == (ActorKind.API_KEY, Channel.API)


def test_owner_cannot_approve_or_reject(owner_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)

    approve = owner_api.post(detail(request.pk, "approve"))
    reject = owner_api.post(detail(request.pk, "reject"), {"reason": "changed my mind"}, format="json")

    assert approve.status_code == reject.status_code == 403
    assert approve.json()["code"] == reject.json()["code"] == "forbidden"
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED


def test_four_eyes_hold_across_channels(admin_api, backup_admin, mine):
    """A backup-team member asks on the web; their own integration key cannot approve it."""
    request = submit_restore(backup_admin, backup=mine.backup, channel=Channel.WEB)

    response = admin_api.post(detail(request.pk, "approve"))

    assert response.status_code == 403
    assert response.json()["code"] == "four_eyes"
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED


def test_four_eyes_for_a_request_made_through_the_api(backup_admin, second_admin_api, mine):
    own_key = key_client(backup_admin, name="Admin's own")
    created = own_key.post(URL, body(mine, overwrite=True), format="json").json()

    assert own_key.post(detail(created["id"], "approve")).json()["code"] == "four_eyes"
    assert second_admin_api.post(detail(created["id"], "approve")).status_code == 200


def test_reject_needs_a_reason(admin_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)

    missing = admin_api.post(detail(request.pk, "reject"), {}, format="json")
    blank = admin_api.post(detail(request.pk, "reject"), {"reason": "  "}, format="json")

    assert missing.status_code == blank.status_code == 400
    assert missing.json()["errors"] == {"reason": ["This field is required."]}
    assert blank.json()["code"] == "reason_required"


def test_backup_team_rejects_with_a_reason(admin_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)

    response = admin_api.post(
        detail(request.pk, "reject"), {"reason": "Use last night's backup."}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert RestoreRequest.objects.get(pk=request.pk).decision_reason == "Use last night's backup."


def test_illegal_transition_is_409(admin_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)
    assert admin_api.post(detail(request.pk, "reject"), {"reason": "no"}, format="json").status_code == 200

    again = admin_api.post(detail(request.pk, "approve"))

    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"


def test_requester_cancels_but_a_co_owner_may_not(owner_api, owner, app, mine):
    co_owner = factories.UserFactory(username="co_owner")
    app.owners.add(co_owner)
    request = submit_restore(owner, backup=mine.backup)

    refused = key_client(co_owner).post(detail(request.pk, "cancel"))
    cancelled = owner_api.post(detail(request.pk, "cancel"))

    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
