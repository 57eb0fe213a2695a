"""Idempotency: a ticket opens one request per integration, and an Idempotency-Key answers once.

Both must hold when the duplicates arrive at the same moment: ten threads,
each with its own connection, against the real database (SQLite or, with
DATABASE_URL, PostgreSQL).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.models import Job
from catalog.services import jobs
from requests_app.api.idempotency import purge_idempotency_records
from requests_app.models import ClientRequest, IdempotencyRecord, RestoreRequest
from tests import factories
from tests.factories import build_estate
from tests.helpers import key_client
from tests.requests.factories import submit_restore

RESTORES = "/api/v1/restore-requests/"
DUPLICATES = 10


def restore_body(estate, **fields) -> dict:
    return {
        "backup": estate.backup.pk,
        "target_agent": estate.agent.hostname,
        "target_location": "/srv/restore/a",
        "external_ref": "INC0012345",
        **fields,
    }


# --- external_ref ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_ticket_twice_returns_the_first_request_with_200(owner_api, mine):
    first = owner_api.post(RESTORES, restore_body(mine), format="json")
    second = owner_api.post(RESTORES, restore_body(mine, target_location="/srv/other"), format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["target_location"] == "/srv/restore/a"
    assert RestoreRequest.objects.count() == 1


@pytest.mark.django_db
def test_a_ticket_seen_before_is_found_even_if_the_body_is_no_longer_valid(owner_api, mine):
    first = owner_api.post(RESTORES, restore_body(mine), format="json").json()

    again = owner_api.post(RESTORES, {"external_ref": "INC0012345"}, format="json")

    assert again.status_code == 200 and again.json()["id"] == first["id"]


@pytest.mark.django_db
def test_tickets_are_per_integration(owner, owner_api, mine):
    other_integration = key_client(owner, name="Jira")

    first = owner_api.post(RESTORES, restore_body(mine), format="json")
    second = other_integration.post(RESTORES, restore_body(mine), format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert RestoreRequest.objects.count() == 2


@pytest.mark.django_db
def test_people_signed_in_are_not_deduplicated_by_ticket(owner, mine):
    client = APIClient()
    client.force_login(owner)

    codes = [client.post(RESTORES, restore_body(mine), format="json").status_code for _ in range(2)]

    assert codes == [201, 201]


@pytest.mark.django_db
def test_client_requests_too(owner_api, app, auto_policy):
    body = {
        "application": app.slug,
        "hostname": "web01.example.com",
        "plugin": "files",
        "options": {"paths": ["/srv/www"]},
        "policy": auto_policy.name,
        "external_ref": "CHG1",
    }

    first = owner_api.post("/api/v1/client-requests/", body, format="json")
    second = owner_api.post("/api/v1/client-requests/", body, format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert ClientRequest.objects.count() == 1


# --- Idempotency-Key -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_repeated_key_replays_the_first_answer(owner_api, mine):
    body = restore_body(mine, external_ref="")

    first = owner_api.post(RESTORES, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = owner_api.post(RESTORES, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert RestoreRequest.objects.count() == 1
    record = IdempotencyRecord.objects.get()
    assert (record.owner, record.key, record.status_code) == (f"api_key:{owner_api.api_key.pk}", "k-1", 201)


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422(owner_api, mine):
    owner_api.post(RESTORES, restore_body(mine), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    response = owner_api.post(
        RESTORES, restore_body(mine, target_location="/srv/b"), format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


@pytest.mark.django_db
def test_the_same_key_on_another_path_is_422(owner_api, mine):
    owner_api.post(f"/api/v1/clients/{mine.client.pk}/backup-now/", HTTP_IDEMPOTENCY_KEY="k-1")

    response = owner_api.post(RESTORES, restore_body(mine), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert response.status_code == 422


@pytest.mark.django_db
def test_refusals_are_replayed_too(owner_api, admin_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)
    url = f"{RESTORES}{request.pk}/approve/"

    first = owner_api.post(url, HTTP_IDEMPOTENCY_KEY="approve-1")
    second = owner_api.post(url, HTTP_IDEMPOTENCY_KEY="approve-1")

    assert (first.status_code, second.status_code) == (403, 403)
    assert second.json() == first.json() and second["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_a_retried_action_does_not_turn_into_a_conflict(admin_api, owner, mine):
    request = submit_restore(owner, backup=mine.backup)
    url = f"{RESTORES}{request.pk}/approve/"

    first = admin_api.post(url, HTTP_IDEMPOTENCY_KEY="approve-1")
    retried = admin_api.post(url, HTTP_IDEMPOTENCY_KEY="approve-1")
    without_key = admin_api.post(url)

    assert (first.status_code, retried.status_code, without_key.status_code) == (200, 200, 409)
    assert retried.json() == first.json()


@pytest.mark.django_db
def test_backup_now_with_a_key_queues_one_job(owner_api, mine):
    url = f"/api/v1/clients/{mine.client.pk}/backup-now/"
    before = Job.objects.count()

    answers = [owner_api.post(url, HTTP_IDEMPOTENCY_KEY="nightly-2025-01-31") for _ in range(3)]

    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert Job.objects.count() == before + 1


@pytest.mark.django_db
def test_keys_of_different_callers_never_meet(owner_api, owner, mine):
    other_integration = key_client(owner, name="Jira")
    url = f"/api/v1/clients/{mine.client.pk}/backup-now/"

    first = owner_api.post(url, HTTP_IDEMPOTENCY_KEY="same")
    jobs.cancel(first.json()["id"])  # one open backup per client: make room for a second
    second = other_integration.post(url, HTTP_IDEMPOTENCY_KEY="same")

    assert (first.status_code, second.status_code) == (202, 202)  # not a replay of the first answer
    assert first.json()["id"] != second.json()["id"]
    assert IdempotencyRecord.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["x" * 256, "   ", "tab\tin key"])
def test_an_unusable_key_is_400(owner_api, mine, key):
    response = owner_api.post(f"/api/v1/clients/{mine.client.pk}/backup-now/", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_server_error_is_not_stored_and_leaves_nothing_behind(owner_api, mine):
    owner_api.raise_request_exception = False
    with mock.patch("requests_app.services.submit_restore", side_effect=RuntimeError("database on fire")):
        failed = owner_api.post(RESTORES, restore_body(mine), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert failed.status_code == 500
    assert not IdempotencyRecord.objects.exists()
    retried = owner_api.post(RESTORES, restore_body(mine), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert retried.status_code == 201


@pytest.mark.django_db
def test_a_session_post_is_answered_once_although_the_csrf_check_parses_the_body(owner, mine):
    """Session auth's CSRF check parses the body before the handler runs; the fingerprint still has it."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    body = restore_body(mine, external_ref="")

    answers = [
        client.post(RESTORES, body, format="json", HTTP_X_CSRFTOKEN=token, HTTP_IDEMPOTENCY_KEY="k-1")
        for _ in range(2)
    ]

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[1]["Idempotent-Replayed"] == "true"
    assert IdempotencyRecord.objects.get().owner == f"user:{owner.pk}"
    assert RestoreRequest.objects.count() == 1


@pytest.mark.django_db
def test_a_refusal_before_the_handler_is_not_stored(mine):
    """Unauthenticated: nobody to own the key, nothing stored; the same key works once signed in."""
    client = APIClient()
    url = f"/api/v1/clients/{mine.client.pk}/backup-now/"

    assert client.post(url, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 401
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_records_are_kept_48_hours(owner_api, mine):
    now = timezone.now()
    for hours in (1, 30, 47, 49, 100):
        IdempotencyRecord.objects.create(
            owner="user:1",
            key=f"{hours}h",
            fingerprint="0" * 64,
            status_code=201,
            response={},
            created_at=now - timedelta(hours=hours),
        )

    assert purge_idempotency_records(now=now) == 2
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["1h", "30h", "47h"]


# --- Concurrent duplicates ---------------------------------------------------------------------------


def post_at_once(key: str, url: str, body: dict, headers: dict | None = None) -> list[tuple[int, dict]]:
    """``DUPLICATES`` threads POST the same thing at the same moment; their (status, body)."""
    barrier = threading.Barrier(DUPLICATES)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def post() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}", **(headers or {}))
            barrier.wait()
            response = client.post(url, body, format="json")
            answer = (response.status_code, response.json())
        except BaseException as exc:  # anything else is a bug: surface it
            answer = (0, {"error": repr(exc)})
        finally:
            connection.close()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=post) for _ in range(DUPLICATES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


@pytest.fixture
def estate_and_key(backup_team_group):
    owner = factories.UserFactory(username="racer")
    app = factories.ApplicationFactory(owners=[owner])
    client = key_client(owner)
    return build_estate(app), client


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_of_a_ticket_make_one_request(estate_and_key):
    estate, client = estate_and_key

    answers = post_at_once(client.key, RESTORES, restore_body(estate))

    assert Counter(code for code, _ in answers) == {201: 1, 200: DUPLICATES - 1}, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert RestoreRequest.objects.count() == 1
    assert Job.objects.filter(kind="restore").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_with_one_idempotency_key_make_one_request(estate_and_key):
    estate, client = estate_and_key
    key = str(uuid.uuid4())

    answers = post_at_once(
        client.key, RESTORES, restore_body(estate, external_ref=""), {"HTTP_IDEMPOTENCY_KEY": key}
    )

    assert Counter(code for code, _ in answers) == {201: DUPLICATES}, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert RestoreRequest.objects.count() == 1
    assert IdempotencyRecord.objects.get().status_code == 201


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_of_a_client_request_make_one(estate_and_key):
    estate, client = estate_and_key
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    body = {
        "application": estate.client.application.slug,
        "hostname": "new01.example.com",
        "plugin": "files",
        "options": {"paths": ["/srv"]},
        "policy": policy.name,
        "external_ref": "CHG42",
    }

    answers = post_at_once(client.key, "/api/v1/client-requests/", body)

    assert Counter(code for code, _ in answers) == {201: 1, 200: DUPLICATES - 1}, answers
    assert ClientRequest.objects.count() == 1
