"""Signing in: our page, the dashboard after it. The lockout is tested in test_login_throttle.py."""

from __future__ import annotations

import pytest
from django.urls import reverse

PASSWORD = "correct horse battery staple"  # tests/factories.py


def sign_in(browser, username, password, address="10.0.0.1"):
    return browser.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_sign_in_page_is_ours(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert "Application owners: protect servers" in response.content.decode()


@pytest.mark.django_db
def test_right_password_signs_in_and_lands_on_the_dashboard(client, owner):
    response = sign_in(client, "owner", PASSWORD)
    assert response.status_code == 302
    assert response.url == "/"


@pytest.mark.django_db
def test_wrong_password_is_refused_on_the_page(client, owner):
    response = sign_in(client, "owner", "wrong")
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session
