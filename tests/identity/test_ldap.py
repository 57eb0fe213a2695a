"""LDAP sign-in against a real OpenLDAP server (tests/identity/slapd.py), through the portal's sign-in page.

The server is started once for the session; each test that changes the directory adds its own
people (``new_person``), so tests do not see each other's changes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.tenancy import is_backup_team
from identity import ldap as identity_ldap
from identity.middleware import SESSION_KEY
from identity.models import DirectoryAccount, Source
from identity.tasks import recheck_directory_users
from requests_app.models import ApiKey
from tests import factories
from tests.identity import slapd
from tests.identity.slapd import BASE, BIND_DN, BIND_PASSWORD, free_port, password, user_dn

slapd_server = slapd.slapd_server  # the fixtures
new_person = slapd.new_person

pytestmark = pytest.mark.django_db

BACKEND = "identity.ldap.LDAPBackend"
WRONG = "Please enter a correct username and password."
PERIOD = 300
LOCAL_PASSWORD = "correct horse battery staple"  # tests/factories.py


@pytest.fixture(autouse=True)
def ldap_on(settings, slapd_server):
    """The portal configured for the test directory, as the environment would (docs/operations.md)."""
    settings.LDAP_SERVER_URI = slapd_server.uri
    settings.LDAP_BIND_DN = BIND_DN
    settings.LDAP_BIND_PASSWORD = BIND_PASSWORD
    settings.LDAP_USER_SEARCH_BASE = f"ou=people,{BASE}"
    settings.LDAP_USER_FILTER = "(uid=%(user)s)"
    settings.LDAP_GROUP_SEARCH_BASE = f"ou=groups,{BASE}"
    settings.LDAP_GROUP_TYPE = "groupOfNames"
    settings.PORTAL_DIRECTORY_RECHECK_SECONDS = PERIOD
    settings.PORTAL_DIRECTORY_GROUP_MAP = {}
    settings.PORTAL_DIRECTORY_GROUPS = []
    if BACKEND not in settings.AUTHENTICATION_BACKENDS:
        settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, BACKEND]


def sign_in(client, username, secret=None):
    return client.post(
        reverse("login"), {"username": username, "password": password(username) if secret is None else secret}
    )


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def user(username):
    return get_user_model().objects.get(username=username)


def group_names(username) -> set[str]:
    return set(user(username).groups.values_list("name", flat=True))


def recheck_due(client, username, *, periods: float = 1) -> None:
    """As if ``periods`` re-check periods had passed since the directory last vouched for the user."""
    DirectoryAccount.objects.filter(user__username=username).update(
        checked_at=timezone.now() - timedelta(seconds=periods * PERIOD + 1)
    )
    session = client.session
    session[SESSION_KEY] = 1  # long past
    session.save()


def errors(response) -> list[str]:
    return list(response.context["form"].non_field_errors())


# --- Sign-in ----------------------------------------------------------------------------------


def test_a_directory_user_signs_in_on_the_portal_page_with_their_groups(client):
    response = sign_in(client, "alice")
    assert response.status_code == 302 and signed_in(client)
    alice = user("alice")
    assert (alice.first_name, alice.last_name, alice.email) == ("Alice", "Archer", "alice@example.test")
    assert not alice.has_usable_password()
    assert group_names("alice") == {"shop-owners", "backup-ops"}
    account = DirectoryAccount.objects.get(user=alice)
    assert (account.source, account.subject) == (Source.LDAP, user_dn("alice"))
    assert client.get("/").status_code == 200


def test_the_mapped_directory_group_makes_the_backup_team(client, settings):
    settings.PORTAL_DIRECTORY_GROUP_MAP = {"backup-ops": settings.PORTAL_BACKUP_TEAM_GROUP}
    sign_in(client, "alice")
    assert group_names("alice") == {"shop-owners", settings.PORTAL_BACKUP_TEAM_GROUP}
    assert is_backup_team(user("alice"))
    client.post(reverse("logout"))
    sign_in(client, "bob")
    assert not is_backup_team(user("bob"))


def test_groups_are_added_and_removed_at_the_next_sign_in(client, slapd_server, new_person):
    uid = new_person("shop-owners", "hr-owners")
    sign_in(client, uid)
    assert group_names(uid) == {"shop-owners", "hr-owners"}
    slapd_server.remove_member("hr-owners", user_dn(uid))
    slapd_server.add_member("backup-ops", user_dn(uid))
    client.post(reverse("logout"))
    sign_in(client, uid)
    assert signed_in(client)
    assert group_names(uid) == {"shop-owners", "backup-ops"}


def test_nested_groups_count_with_the_nested_group_type(client, settings):
    sign_in(client, "carol")
    assert group_names("carol") == {"ops-nested"}
    settings.LDAP_GROUP_TYPE = "nestedGroupOfNames"
    client.post(reverse("logout"))
    sign_in(client, "carol")
    assert group_names("carol") == {"ops-nested", "platform"}


def test_a_wrong_password_is_the_usual_message_and_counts_towards_the_lockout(client, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 2
    response = sign_in(client, "alice", "not-her-password")
    assert response.status_code == 200 and not signed_in(client)
    assert any(WRONG in error for error in errors(response))
    assert AccessAttempt.objects.get(username="alice").failures_since_start == 1
    assert sign_in(client, "alice", "still-wrong").status_code == 429
    assert sign_in(client, "alice").status_code == 429  # locked: even the right password
    assert not get_user_model().objects.filter(username="alice").exists()


def test_a_disabled_user_cannot_sign_in(client):
    response = sign_in(client, "dave")  # pwdAccountLockedTime: the default LDAP_DISABLED_FILTER
    assert response.status_code == 200 and not signed_in(client)
    assert any(WRONG in error for error in errors(response))
    assert not get_user_model().objects.filter(username="dave").exists()


def test_an_unknown_name_is_a_wrong_password(client):
    response = sign_in(client, "nobody", "whatever")
    assert response.status_code == 200 and any(WRONG in error for error in errors(response))


# --- Break-glass accounts ---------------------------------------------------------------------


def test_a_directory_user_cannot_take_over_a_local_account_of_the_same_name(client, new_person):
    uid = new_person("backup-ops")
    local = factories.UserFactory(username=uid, is_staff=True, is_superuser=True)
    response = sign_in(client, uid)  # the directory's password
    assert not signed_in(client) and any(WRONG in error for error in errors(response))
    assert not DirectoryAccount.objects.filter(user=local).exists()
    assert not local.groups.exists()
    assert sign_in(client, uid, LOCAL_PASSWORD).status_code == 302  # the local one still works
    assert client.session["_auth_user_backend"] != identity_ldap.__name__ + ".LDAPBackend"


def test_a_staff_account_without_password_is_not_adopted_either(client, new_person):
    uid = new_person()
    staff = factories.UserFactory(username=uid, is_staff=True)
    staff.set_unusable_password()
    staff.save()
    sign_in(client, uid)
    assert not signed_in(client)


def test_an_account_created_ahead_without_rights_is_adopted(client, new_person):
    uid = new_person("shop-owners")
    ahead = factories.UserFactory(username=uid)
    ahead.set_unusable_password()
    ahead.save()
    sign_in(client, uid)
    assert signed_in(client) and int(client.session["_auth_user_id"]) == ahead.pk
    assert group_names(uid) == {"shop-owners"}


def test_an_account_of_the_other_directory_does_not_sign_in_through_ldap(client, new_person):
    uid = new_person()
    other = factories.UserFactory(username=uid)
    other.set_unusable_password()
    other.save()
    DirectoryAccount.objects.create(user=other, source=Source.OIDC, subject="oidc-subject")
    sign_in(client, uid)
    assert not signed_in(client)


# --- The directory cannot be reached ------------------------------------------------------------


def test_directory_down_is_a_clear_error_and_break_glass_still_signs_in(client, settings, owner):
    settings.AXES_ENABLED = True
    settings.LDAP_SERVER_URI = f"ldap://127.0.0.1:{free_port()}/"  # nothing listens there
    response = sign_in(client, "alice")
    assert response.status_code == 200 and not signed_in(client)
    assert errors(response) == [identity_ldap.UNREACHABLE_MESSAGE]
    assert identity_ldap.UNREACHABLE_MESSAGE in response.content.decode()
    assert not AccessAttempt.objects.exists()  # no password was checked: no failure counted
    assert sign_in(client, "owner", LOCAL_PASSWORD).status_code == 302
    assert signed_in(client)


def test_a_stopped_directory_is_a_clear_error_too(client, settings, tmp_path):
    own = slapd.start_slapd(tmp_path / "own")
    settings.LDAP_SERVER_URI = own.uri
    try:
        assert sign_in(client, "bob").status_code == 302
        client.post(reverse("logout"))
        own.stop()
        response = sign_in(client, "bob")
    finally:
        own.stop()
    assert errors(response) == [identity_ldap.UNREACHABLE_MESSAGE]


def test_ldap_is_off_without_a_server_uri(client, settings):
    settings.LDAP_SERVER_URI = ""
    response = sign_in(client, "alice")
    assert not signed_in(client) and any(WRONG in error for error in errors(response))


# --- Re-check while signed in -------------------------------------------------------------------


def test_a_removed_group_goes_at_the_first_request_after_the_recheck_period(client, slapd_server, new_person):
    uid = new_person("shop-owners", "hr-owners")
    sign_in(client, uid)
    slapd_server.remove_member("hr-owners", user_dn(uid))
    client.get("/")
    assert group_names(uid) == {"shop-owners", "hr-owners"}  # within the period: not read again
    recheck_due(client, uid)
    assert client.get("/").status_code == 200
    assert group_names(uid) == {"shop-owners"}
    assert timezone.now() - DirectoryAccount.objects.get(user__username=uid).checked_at < timedelta(minutes=1)


def test_a_user_disabled_in_the_directory_is_signed_out_and_deactivated(client, slapd_server, new_person):
    uid = new_person("shop-owners")
    sign_in(client, uid)
    _, key = ApiKey.issue(user=user(uid), name="ticketing")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/applications/").status_code == 200
    slapd_server.lock(uid)
    recheck_due(client, uid)
    response = client.get("/")
    assert response.status_code == 302 and reverse("login") in response["Location"]
    assert not signed_in(client) and not user(uid).is_active
    assert api.get("/api/v1/applications/").status_code in (401, 403)
    slapd_server.unlock(uid)
    assert not signed_in(client) and sign_in(client, uid).status_code == 200  # reactivated by hand only


def test_an_unreachable_directory_keeps_the_session_for_one_more_period(client, settings):
    sign_in(client, "bob")
    settings.LDAP_SERVER_URI = f"ldap://127.0.0.1:{free_port()}/"
    recheck_due(client, "bob")
    assert client.get("/").status_code == 200 and signed_in(client)  # in the grace
    assert group_names("bob") == {"shop-owners"}  # as last read
    recheck_due(client, "bob", periods=2)
    response = client.get("/")
    assert response.status_code == 302 and not signed_in(client)  # past the grace: fail closed
    assert user("bob").is_active  # an outage deactivates nobody


def test_a_local_sign_in_costs_no_query_for_the_directory(client, owner, django_assert_max_num_queries):
    assert sign_in(client, "owner", LOCAL_PASSWORD).status_code == 302
    with django_assert_max_num_queries(2) as captured:  # the session and the user, as before
        client.get(reverse("login"))  # signed in: redirected
    assert not [query for query in captured if "identity_directoryaccount" in query["sql"]]
    assert SESSION_KEY not in client.session


def test_a_directory_session_costs_no_query_between_rechecks(client, django_assert_max_num_queries):
    sign_in(client, "bob")
    client.get(reverse("login"))  # the first request reads when the next re-check is due
    with django_assert_max_num_queries(2) as captured:
        client.get(reverse("login"))
    assert not [query for query in captured if "identity_directoryaccount" in query["sql"]]


# --- The periodic re-check ----------------------------------------------------------------------


def test_the_periodic_task_deactivates_users_who_make_no_request(client, slapd_server, new_person):
    gone, disabled, fine = new_person("shop-owners"), new_person("shop-owners"), new_person("hr-owners")
    for uid in (gone, disabled, fine):
        sign_in(client, uid)
        client.post(reverse("logout"))
    _, key = ApiKey.issue(user=user(disabled), name="ticketing")
    slapd_server.delete(user_dn(gone))
    slapd_server.lock(disabled)
    slapd_server.remove_member("hr-owners", user_dn(fine))
    assert recheck_directory_users() == 0  # nobody is due yet
    DirectoryAccount.objects.update(checked_at=timezone.now() - timedelta(seconds=PERIOD + 1))
    assert recheck_directory_users() == 2
    assert (user(gone).is_active, user(disabled).is_active, user(fine).is_active) == (False, False, True)
    assert group_names(fine) == set()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/applications/").status_code in (401, 403)


def test_the_periodic_task_deactivates_nobody_while_the_directory_is_down(client, settings, new_person):
    uid = new_person("shop-owners")
    sign_in(client, uid)
    DirectoryAccount.objects.update(checked_at=timezone.now() - timedelta(seconds=3 * PERIOD))
    settings.LDAP_SERVER_URI = f"ldap://127.0.0.1:{free_port()}/"
    assert recheck_directory_users() == 0
    assert user(uid).is_active and group_names(uid) == {"shop-owners"}


def test_a_directory_that_accepts_but_never_answers_is_given_up_on(client, settings):
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the kernel; nothing ever answers
        settings.LDAP_SERVER_URI = f"ldap://127.0.0.1:{silent.getsockname()[1]}/"
        settings.LDAP_TIMEOUT = 1
        started = time.monotonic()
        response = sign_in(client, "alice")
    assert time.monotonic() - started < 5
    assert errors(response) == [identity_ldap.UNREACHABLE_MESSAGE]


@pytest.fixture
def tls_directory(tmp_path):
    server = slapd.start_slapd(tmp_path / "tls", tls=True)
    yield server
    server.stop()


@pytest.mark.parametrize("encrypted", ["starttls", "ldaps"])
def test_the_directory_is_reached_over_tls_with_the_company_ca(client, settings, tls_directory, encrypted):
    settings.LDAP_CA_FILE = str(tls_directory.folder / "ca.pem")
    if encrypted == "starttls":
        settings.LDAP_SERVER_URI, settings.LDAP_START_TLS = tls_directory.uri, True
    else:
        settings.LDAP_SERVER_URI = tls_directory.ldaps_uri
    assert sign_in(client, "bob").status_code == 302


@pytest.mark.parametrize("encrypted", ["starttls", "ldaps"])
def test_a_certificate_from_an_unknown_ca_is_refused(client, settings, tls_directory, encrypted):
    if encrypted == "starttls":
        settings.LDAP_SERVER_URI, settings.LDAP_START_TLS = tls_directory.uri, True
    else:
        settings.LDAP_SERVER_URI = tls_directory.ldaps_uri
    response = sign_in(client, "bob")  # the system's CAs do not know the test CA
    assert errors(response) == [identity_ldap.UNREACHABLE_MESSAGE]
