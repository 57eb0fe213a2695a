"""Who may call the API: a live key or a session; anything else is a 401 with a code."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.helpers import key_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/applications/"


def test_no_credentials_is_401(app):
    response = APIClient().get(URL)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    "header",
    ["Token bp_not-a-real-key", "Token", "Token two parts", "token bp_nope"],
)
def test_a_bad_key_is_401(app, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get(URL)

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_a_revoked_key_is_401(owner, app):
    client = key_client(owner)
    assert client.get(URL).status_code == 200
    client.api_key.revoked_at = timezone.now()
    client.api_key.save(update_fields=["revoked_at"])

    response = client.get(URL)

    assert response.status_code == 401
    assert response.json() == {"code": "authentication_failed", "detail": "Unknown or revoked API key."}


def test_a_key_of_a_deactivated_user_is_401(owner, app):
    client = key_client(owner)
    owner.is_active = False
    owner.save(update_fields=["is_active"])

    assert client.get(URL).status_code == 401


def test_a_post_without_credentials_is_401_too(mine):
    response = APIClient().post("/api/v1/restore-requests/", {}, format="json")

    assert response.status_code == 401


def test_use_is_recorded_on_the_key(owner, app):
    client = key_client(owner)

    client.get(URL)

    client.api_key.refresh_from_db()
    assert client.api_key.last_used_at is not None


def test_session_auth_works_for_people(owner, app):
    client = APIClient()
    client.force_login(owner)

    assert client.get(URL).status_code == 200


def test_session_posts_need_the_csrf_token(owner, mine):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(f"/api/v1/clients/{mine.client.pk}/backup-now/")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
