"""OpenID Connect sign-in without a browser: the callback's refusals, the sign-in page, the local switch."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from identity import oidc
from tests import factories
from tests.oidc_provider.fixtures import oidc_portal, oidc_provider  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


def message_texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_a_state_this_browser_never_sent_signs_nobody_in(client, oidc_portal):  # noqa: F811
    started = client.get(reverse("oidc_authentication_init"))
    assert started.status_code == 302 and started["Location"].startswith(oidc_portal.issuer + "/authorize/")
    assert "code_challenge=" in started["Location"] and "code_challenge_method=S256" in started["Location"]
    assert "nonce=" in started["Location"]

    response = client.get(reverse("oidc_authentication_callback"), {"code": "stolen", "state": "bogus"})
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session
    assert any("could not be verified" in text for text in message_texts(response))


def test_a_callback_with_no_sign_in_started_signs_nobody_in(client, oidc_portal):  # noqa: F811
    response = client.get(reverse("oidc_authentication_callback"), {"code": "stolen", "state": "bogus"})
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_the_providers_error_is_shown(client, oidc_portal):  # noqa: F811
    client.get(reverse("oidc_authentication_init"))
    response = client.get(
        reverse("oidc_authentication_callback"),
        {"error": "access_denied", "error_description": "User is not assigned to the application"},
        follow=True,
    )
    assert "User is not assigned to the application" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_provider_that_cannot_be_reached_leaves_the_local_form_working(client, settings):
    settings.OIDC_ISSUER = "http://127.0.0.1:9/nowhere"
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "portal", "secret"
    oidc._discovery.clear()
    response = client.get(reverse("oidc_authentication_init"), follow=True)
    assert "cannot be reached" in response.content.decode()
    factories.UserFactory(username="breakglass", password=PASSWORD)
    signed_in = client.post(reverse("login"), {"username": "breakglass", "password": PASSWORD})
    assert signed_in.status_code == 302 and client.session["_auth_user_id"]


def test_without_an_issuer_there_is_no_button_and_no_oidc_urls(client, settings):
    settings.OIDC_ISSUER = ""
    page = client.get(reverse("login")).content.decode()
    assert "Sign in with" not in page and 'name="password"' in page and "Break-glass" not in page
    assert client.get(reverse("oidc_authentication_init")).status_code == 404
    assert client.get(reverse("oidc_authentication_callback"), {"code": "x", "state": "y"}).status_code == 404


def test_the_page_offers_the_button_and_the_break_glass_form(client, settings):
    settings.OIDC_ISSUER, settings.OIDC_PROVIDER_NAME = "https://login.example.com", "Example Corp"
    page = client.get(reverse("login"), {"next": "/alerts/"}).content.decode()
    assert "Sign in with Example Corp" in page
    assert f'href="{reverse("oidc_authentication_init")}?next=/alerts/"' in page
    assert "Break-glass account" in page and 'name="password"' in page


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_local_login_off_refuses_every_password(client, settings, path):
    settings.OIDC_ISSUER, settings.PORTAL_LOCAL_LOGIN = "https://login.example.com", False
    factories.UserFactory(username="root", password=PASSWORD, is_staff=True, is_superuser=True)
    page = client.get(reverse("login")).content.decode()
    assert "Sign in with" in page and 'name="password"' not in page
    response = client.post(path, {"username": "root", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("claims", "mfa"),
    [
        ({"amr": ["pwd"]}, False),
        ({"amr": ["pwd", "mfa"]}, True),
        ({"amr": ["hwk"]}, True),
        ({"amr": "otp"}, True),
        ({}, False),
        ({"acr": "urn:example:mfa"}, True),
        ({"acr": "urn:example:password"}, False),
    ],
)
def test_what_counts_as_mfa(settings, claims, mfa):
    settings.OIDC_MFA_ACR = ["urn:example:mfa"]
    assert oidc.passed_mfa(claims) is mfa


def test_groups_overage_is_refused_with_advice(settings):
    claims = {"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph"}}}
    with pytest.raises(oidc.SignInRefused, match="too many groups"):
        oidc.group_names(claims)
    assert oidc.group_names({"groups": "one"}) == ["one"]
    assert oidc.group_names({}) == []


def test_a_deactivated_oidc_user_loses_their_open_session(client):
    user = factories.UserFactory(username="frank")
    client.force_login(user, backend="identity.oidc.OIDCBackend")
    assert client.get("/").status_code == 200
    user.is_active = False
    user.save()
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
