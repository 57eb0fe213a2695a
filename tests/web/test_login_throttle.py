"""Sign-in lockout (django-axes): per pair of user name and client address, through the real forms.

The suite runs with django-axes off (portal/test_settings.py: client.login has no request);
every test here turns it back on, as production has it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.db.models import F
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from portal.auth import lockout_response
from requests_app.models import ApiKey
from tests import factories

PASSWORD = "correct horse battery staple"  # tests/factories.py
LOCKED = "Too many failed sign-in attempts for this user name from your address."


@pytest.fixture(autouse=True)
def axes_on(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


@pytest.fixture
def num_proxies(settings):
    """Set NUM_PROXIES as the environment would: for the REST framework and, through it, sign-in."""

    def set_to(count: int) -> None:
        settings.NUM_PROXIES = count
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}

    set_to(0)
    return set_to


def sign_in(browser, username, password, address="10.0.0.1", **headers):
    return browser.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def signed_in(browser) -> bool:
    return "_auth_user_id" in browser.session


@pytest.mark.django_db
def test_failures_for_many_user_names_from_one_address_lock_nobody_else_out(client, owner):
    """Everyone behind the proxy shares its address: guesses at random names must not lock them all out."""
    for n in range(3 * 5):
        response = sign_in(client, f"nobody-{n}", "wrong")
        assert response.status_code == 200, n
    response = sign_in(client, "owner", PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


@pytest.mark.django_db
def test_five_failures_lock_that_pair_out_with_a_clear_message(client, owner):
    for _ in range(4):
        response = sign_in(client, "owner", "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    # The fifth failure locks, and says so on the sign-in page itself.
    response = sign_in(client, "owner", "wrong")
    page = response.content.decode()
    assert response.status_code == 429
    assert LOCKED in page
    assert "Wait 15 minutes, then try again" in page
    assert 'name="password"' in page  # the sign-in page, not a bare error page
    # The right password is refused for as long as the lock lasts.
    response = sign_in(client, "owner", PASSWORD)
    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert not signed_in(client)


@pytest.mark.django_db
def test_the_same_user_name_from_another_address_is_not_locked(client, owner):
    for _ in range(5):
        sign_in(client, "owner", "wrong", address="10.0.0.1")
    assert sign_in(Client(), "owner", PASSWORD, address="10.0.0.1").status_code == 429
    other = Client()
    assert sign_in(other, "owner", PASSWORD, address="10.0.0.2").status_code == 302
    assert signed_in(other)


@pytest.mark.django_db
def test_the_lock_ends_after_the_cool_off(client, owner):
    for _ in range(5):
        sign_in(client, "owner", "wrong")
    assert sign_in(client, "owner", PASSWORD).status_code == 429
    # As if the last attempt (the refused right password restarted the wait) were 15 minutes old.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=15, seconds=1))
    assert sign_in(client, "owner", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_the_right_password_forgets_earlier_typos(client, owner):
    for _ in range(4):
        sign_in(client, "owner", "wrong")
    assert sign_in(client, "owner", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        sign_in(client, "owner", "wrong")
    assert sign_in(client, "owner", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_limit_and_cool_off_follow_the_settings(client, owner, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    assert sign_in(client, "owner", "wrong").status_code == 200
    response = sign_in(client, "owner", "wrong")
    assert response.status_code == 429
    assert "Wait 1 minute, then try again" in response.content.decode()


@pytest.mark.django_db
def test_admin_sign_in_shares_the_lockout(client, backup_admin):
    for _ in range(5):
        sign_in(client, "backup_admin", "wrong")
    response = client.post(
        reverse("admin:login"), {"username": "backup_admin", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1"
    )
    page = response.content.decode()
    assert response.status_code == 429
    assert LOCKED in page
    assert 'id="login-form"' in page  # the admin's own sign-in page
    assert not signed_in(client)


@pytest.mark.django_db
def test_failures_at_the_admin_count_for_the_portal_too(client, backup_admin):
    for _ in range(5):
        client.post(
            reverse("admin:login"), {"username": "backup_admin", "password": "wrong"}, REMOTE_ADDR="10.0.0.1"
        )
    assert sign_in(client, "backup_admin", PASSWORD).status_code == 429


# --- The client's address behind the proxy ---------------------------------------------------------


@pytest.mark.django_db
def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(client, owner, num_proxies):
    num_proxies(0)
    for n in range(5):
        sign_in(client, "owner", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    response = sign_in(client, "owner", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.99")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1"}


@pytest.mark.django_db
def test_behind_one_proxy_the_address_it_appended_decides(client, owner, num_proxies):
    """nginx appends the address it saw; whatever the client put before it is not believed."""
    num_proxies(1)
    proxy = "127.0.0.1"
    for n in range(5):
        forged = f"198.51.100.{n}, 203.0.113.5"  # the client's own header, then nginx's entry
        sign_in(client, "owner", "wrong", address=proxy, HTTP_X_FORWARDED_FOR=forged)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}
    # That client is locked out whatever it forges next ...
    response = sign_in(client, "owner", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.5")
    assert response.status_code == 429
    # ... and the owner, arriving through the same proxy from elsewhere, is not.
    owner_browser = Client()
    response = sign_in(owner_browser, "owner", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="192.0.2.44")
    assert response.status_code == 302
    assert signed_in(owner_browser)


# --- What the lockout leaves alone ---------------------------------------------------------------------


@pytest.mark.django_db
def test_api_keys_and_agent_tokens_are_not_sign_ins(client, owner, app):
    """A locked-out person's integration key, and the agents at that address, keep working."""
    for _ in range(5):
        sign_in(client, "owner", "wrong")
    assert sign_in(client, "owner", PASSWORD).status_code == 429

    _, key = ApiKey.issue(user=owner, name="ServiceNow")
    integration = APIClient(REMOTE_ADDR="10.0.0.1")
    integration.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = integration.get("/api/v1/applications/")
    assert response.status_code == 200, response.content
    assert [row["slug"] for row in response.json()["results"]] == ["orders"]

    agent = factories.AgentFactory(applications=[app])
    token = agent.issue_token()
    agent.save()
    agent_api = APIClient(REMOTE_ADDR="10.0.0.1")
    agent_api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = agent_api.post("/api/agent/v1/poll", {"version": "0.1.0", "plugins": ["files"]}, format="json")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_a_lockout_outside_the_sign_in_forms_still_explains_itself(rf):
    response = lockout_response(rf.post("/elsewhere/"), None, {"username": "owner"})
    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert "Wait 15 minutes" in response.content.decode()
