"""OpenID Connect sign-in in a real browser, against the tests' own provider (tests/oidc_provider).

The authorization-code flow with PKCE: the portal's "Sign in with …" button, the provider's
sign-in form, back at the portal signed in; groups decide which applications a person owns;
``amr`` decides whether the session passed MFA; signing out ends the provider's session too;
ID tokens that do not verify, and a ``state`` this browser never sent, sign nobody in; and
the re-check reads groups again, and refuses a person the provider disabled.
"""

from __future__ import annotations

import time

import jwt
import pytest
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore

from identity import oidc
from identity.models import DirectoryAccount, Source
from tests import factories
from tests.oidc_provider.fixtures import PASSWORD, oidc_portal, oidc_provider  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


def sign_in(page, base_url: str, username: str) -> None:
    """The button, the provider's form, and back at the portal."""
    page.goto(f"{base_url}/accounts/login/")
    page.click("#sso-sign-in")
    page.wait_for_selector("#idp-username")
    page.fill("#idp-username", username)
    page.fill("#idp-password", PASSWORD)
    page.click("#idp-submit")
    page.wait_for_load_state("networkidle")


def portal_session(page) -> SessionStore | None:
    for cookie in page.context.cookies():
        if cookie["name"] == "sessionid" and cookie["domain"] == "localhost":
            session = SessionStore(session_key=cookie["value"])
            return session if session.exists(cookie["value"]) else None
    return None


def signed_in_user(page) -> User | None:
    session = portal_session(page)
    user_id = session.get("_auth_user_id") if session else None
    return User.objects.filter(pk=user_id).first() if user_id else None


@pytest.fixture
def apps():
    """Web Shop belongs to the directory group shop-owners, HR to hr-owners."""
    shop_group = Group.objects.create(name="shop-owners")
    hr_group = Group.objects.create(name="hr-owners")
    shop = factories.ApplicationFactory(slug="webshop", name="Web Shop", owner_group=shop_group)
    hr = factories.ApplicationFactory(slug="hr", name="Human Resources", owner_group=hr_group)
    return shop, hr


def test_sign_in_maps_groups_to_ownership(browser, live_server, oidc_portal, apps, screenshot):  # noqa: F811
    shop, hr = apps
    oidc_portal.set_person("alice", groups=["shop-owners", "Domain Users"], amr=["pwd"])
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(f"{live_server.url}/accounts/login/")
    assert page.inner_text("#sso-sign-in") == "Sign in with Example Corp"
    assert "Break-glass account" in page.content()
    screenshot(page, "oidc-01-sign-in-page")

    sign_in(page, live_server.url, "alice")
    assert page.url == f"{live_server.url}/", page.url
    user = signed_in_user(page)
    assert user is not None and user.username == "alice"
    assert not user.has_usable_password()
    account = DirectoryAccount.objects.get(user=user)
    assert account.source == Source.OIDC and account.subject.startswith(oidc_portal.issuer + "#")
    assert set(user.groups.values_list("name", flat=True)) == {"shop-owners", "Domain Users"}
    assert "Web Shop" in page.content() and "Human Resources" not in page.content()
    screenshot(page, "oidc-02-signed-in")

    assert page.goto(f"{live_server.url}/applications/{shop.slug}/").status == 200
    assert page.goto(f"{live_server.url}/applications/{hr.slug}/").status == 404
    # The provider said nothing of MFA (amr: pwd), so neither does the session.
    assert oidc.MFA_SESSION_KEY not in portal_session(page)
    # What the re-check and the logout need is kept in the session (server-side), not in a cookie.
    session = portal_session(page)
    assert session[oidc.REFRESH_TOKEN_KEY] and session[oidc.ID_TOKEN_KEY]


def test_amr_saying_mfa_marks_the_session(browser, live_server, oidc_portal):  # noqa: F811
    oidc_portal.set_person("bob", groups=[], amr=["pwd", "mfa"])
    page = browser.new_page()
    sign_in(page, live_server.url, "bob")
    assert signed_in_user(page).username == "bob"
    assert portal_session(page)[oidc.MFA_SESSION_KEY] == oidc.MFA_BY_PROVIDER


def test_sign_out_ends_the_provider_session_too(browser, live_server, oidc_portal):  # noqa: F811
    oidc_portal.set_person("erin", groups=[])
    page = browser.new_page()
    sign_in(page, live_server.url, "erin")
    assert signed_in_user(page) is not None
    page.click("text=Sign out")
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(f"{live_server.url}/accounts/login/"), page.url
    assert signed_in_user(page) is None
    # The provider forgot erin as well: the button asks for her password again.
    page.click("#sso-sign-in")
    page.wait_for_selector("#idp-username")


def test_a_local_account_is_never_taken_over(browser, live_server, oidc_portal, screenshot):  # noqa: F811
    local = factories.UserFactory(username="Root", is_staff=True, is_superuser=True)
    oidc_portal.set_person("root", groups=["backup-admins"])
    page = browser.new_page()
    sign_in(page, live_server.url, "root")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    assert "belongs to another portal account" in page.inner_text(".messages")
    screenshot(page, "oidc-03-refused")
    assert signed_in_user(page) is None
    assert not DirectoryAccount.objects.filter(user=local).exists()
    assert not local.groups.exists()


@pytest.fixture
def tampered_token(monkeypatch):
    """Replace the provider's ID token, at the token endpoint's answer, with ``make(original)``."""

    def install(make):
        real = oidc.OIDCBackend.get_token

        def get_token(self, payload):
            answer = real(self, payload)
            answer["id_token"] = make(answer["id_token"])
            self._token_info = answer
            return answer

        monkeypatch.setattr(oidc.OIDCBackend, "get_token", get_token)

    return install


def assert_refused(browser, live_server, username: str) -> None:
    """Signing in as ``username`` ends on the login page, with the token refused and nobody signed in."""
    page = browser.new_page()
    sign_in(page, live_server.url, username)
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    assert "could not be verified" in page.inner_text(".messages")
    assert signed_in_user(page) is None


def test_an_id_token_with_a_bad_signature_is_refused(browser, live_server, oidc_portal, tampered_token):  # noqa: F811
    oidc_portal.set_person("mallory", groups=["shop-owners"])

    def flip_signature(token: str) -> str:
        head, body, signature = token.split(".")
        return ".".join([head, body, ("A" if signature[0] != "A" else "B") + signature[1:]])

    tampered_token(flip_signature)
    assert_refused(browser, live_server, "mallory")
    assert not User.objects.filter(username="mallory").exists()


def test_an_expired_id_token_is_refused(browser, live_server, oidc_portal, tampered_token):  # noqa: F811
    oidc_portal.set_person("oscar", groups=["shop-owners"])

    def expire(token: str) -> str:
        # Signed with the provider's own key: only the expiry is wrong.
        claims = jwt.decode(token, options={"verify_signature": False})
        claims.update(iat=int(time.time()) - 3600, exp=int(time.time()) - 600)
        header = jwt.get_unverified_header(token)
        return jwt.encode(claims, oidc_portal.key, algorithm="RS256", headers=header)

    tampered_token(expire)
    assert_refused(browser, live_server, "oscar")


def test_recheck_follows_the_provider(browser, live_server, oidc_portal, apps, settings):  # noqa: F811
    shop, hr = apps
    settings.PORTAL_DIRECTORY_RECHECK_SECONDS = 1
    oidc_portal.set_person("dave", groups=["shop-owners"])
    page = browser.new_page()
    sign_in(page, live_server.url, "dave")
    assert "Web Shop" in page.content()
    first_refresh_token = portal_session(page)[oidc.REFRESH_TOKEN_KEY]

    # Moved from the shop's group to HR's at the provider: within the re-check period, the portal follows.
    oidc_portal.set_person("dave", groups=["hr-owners"])
    time.sleep(1.2)
    page.goto(f"{live_server.url}/")
    assert "Human Resources" in page.content() and "Web Shop" not in page.content()
    assert page.goto(f"{live_server.url}/applications/{shop.slug}/").status == 404
    user = User.objects.get(username="dave")
    assert set(user.groups.values_list("name", flat=True)) == {"hr-owners"}
    assert portal_session(page)[oidc.REFRESH_TOKEN_KEY] != first_refresh_token  # rotated

    # Disabled at the provider: the refresh is refused; signed out and deactivated.
    oidc_portal.set_person("dave", groups=["hr-owners"], active=False)
    time.sleep(1.2)
    page.goto(f"{live_server.url}/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/"), page.url
    assert signed_in_user(page) is None
    user.refresh_from_db()
    assert not user.is_active
