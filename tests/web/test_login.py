"""Signing in: our page, and repeated failures refused for the rest of the window."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from portal import auth

PASSWORD = "correct horse battery staple"  # tests/factories.py


def sign_in(browser, username, password, address="10.0.0.1"):
    return browser.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_right_password_signs_in_and_lands_on_the_dashboard(client, owner):
    response = sign_in(client, "owner", PASSWORD)
    assert response.status_code == 302
    assert response.url == "/"


@pytest.mark.django_db
def test_sixth_attempt_is_refused_even_with_the_right_password(client, owner):
    for _ in range(auth.FAILURE_LIMIT):
        response = sign_in(client, "owner", "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    response = sign_in(client, "owner", PASSWORD)
    assert response.status_code == 200
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_throttle_counts_per_user_name_across_addresses(client, owner):
    for n in range(auth.FAILURE_LIMIT):
        sign_in(client, "OWNER", "wrong", address=f"10.0.1.{n}")
    assert "Too many" in sign_in(client, "owner", PASSWORD, address="10.9.9.9").content.decode()


@pytest.mark.django_db
def test_throttle_counts_per_address_across_user_names(client, owner):
    for n in range(auth.FAILURE_LIMIT):
        sign_in(client, f"nobody{n}", "wrong")
    assert "Too many" in sign_in(client, "owner", PASSWORD).content.decode()
    # Another address is not affected.
    assert sign_in(Client(), "owner", PASSWORD, address="10.0.0.2").status_code == 302


@pytest.mark.django_db
def test_window_ends(client, owner, monkeypatch):
    for _ in range(auth.FAILURE_LIMIT):
        sign_in(client, "owner", "wrong")
    later = auth.time.time() + auth.WINDOW + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    # LocMemCache expiry uses its own clock, so the entry may still be there: the window check must not.
    assert sign_in(client, "owner", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_success_resets_the_user_names_count(client, owner):
    for _ in range(auth.FAILURE_LIMIT - 1):
        sign_in(client, "owner", "wrong", address="10.0.2.1")
    assert sign_in(client, "owner", PASSWORD, address="10.0.2.2").status_code == 302
    client.logout()
    sign_in(client, "owner", "wrong", address="10.0.2.3")
    assert sign_in(client, "owner", PASSWORD, address="10.0.2.4").status_code == 302


@pytest.mark.django_db
def test_admin_sign_in_shares_the_throttle(client, backup_admin):
    for _ in range(auth.FAILURE_LIMIT):
        sign_in(client, "backup_admin", "wrong")
    response = client.post(
        reverse("admin:login"), {"username": "backup_admin", "password": PASSWORD}, REMOTE_ADDR="10.0.3.1"
    )
    assert response.status_code == 200
    assert "Too many failed sign-in attempts" in response.content.decode()
