"""Setting up an authenticator at /account/mfa/ and entering its codes: the session passes MFA."""

from __future__ import annotations

import logging
from base64 import b32encode

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity import mfa
from tests import factories
from tests.identity.totp import code, enrolled, mark_oidc_amr, pass_mfa, wrong_code

ENROL = "/account/mfa/"
VERIFY = "/account/mfa/verify/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def mfa_on(settings):
    settings.PORTAL_MFA_FOR_APPROVALS = True


def passed(client) -> bool:
    return client.get(ENROL).context["passed"]


def test_the_pages_are_for_people_signed_in(client):
    assert client.get(ENROL).status_code == 302
    assert client.get(VERIFY)["Location"].startswith(reverse("login"))


def test_enrolment_shows_a_qr_code_and_the_secret_until_a_code_confirms_it(
    client, backup_admin, caplog
):
    caplog.set_level(logging.DEBUG)
    client.force_login(backup_admin)

    page = client.get(ENROL)
    again = client.get(ENROL)

    device = TOTPDevice.objects.get(user=backup_admin)
    secret = b32encode(device.bin_key).decode()
    assert page.status_code == 200
    assert not device.confirmed
    text = page.text.replace(" ", "")
    assert secret in text and "<svg" in page.text
    # One device, one secret: a reload shows what was already scanned.
    assert again.context["secret"] == page.context["secret"]
    assert "no-cache" in page["Cache-Control"] or "max-age=0" in page["Cache-Control"]
    assert "csrfmiddlewaretoken" in page.text

    response = client.post(ENROL, {"code": code(device)})

    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert client.session[mfa.SESSION_KEY] == mfa.TOTP
    assert passed(client)
    # The secret is never logged, whatever the level.
    assert secret not in caplog.text and device.key not in caplog.text
    # Confirmed: the secret is not shown again.
    assert secret not in client.get(ENROL).text.replace(" ", "")


def test_a_wrong_code_does_not_confirm_the_device(client, owner):
    client.force_login(owner)
    client.get(ENROL)
    device = TOTPDevice.objects.get(user=owner)

    response = client.post(ENROL, {"code": wrong_code(device)})

    assert response.status_code == 200
    assert "That code is not right" in response.text
    device.refresh_from_db()
    assert not device.confirmed
    assert mfa.SESSION_KEY not in client.session


def test_not_six_digits_is_refused_without_counting(client, owner):
    client.force_login(owner)
    client.get(ENROL)

    response = client.post(ENROL, {"code": "12ab"})

    assert "Enter the six digits" in response.text
    assert TOTPDevice.objects.get(user=owner).throttling_failure_count == 0


def test_the_verify_page_passes_the_session(client, backup_admin):
    device = enrolled(backup_admin)
    client.force_login(backup_admin)
    page = client.get(VERIFY)
    assert "Enter the code from your authenticator" in page.text

    response = client.post(VERIFY + "?next=/admin/", {"code": code(device), "next": "/admin/"})

    assert response["Location"] == "/admin/"
    assert client.session[mfa.SESSION_KEY] == mfa.TOTP
    assert passed(client)
    assert [str(m) for m in get_messages(response.wsgi_request)][-1].startswith("Code accepted")


def test_the_verify_page_does_not_redirect_elsewhere(client, backup_admin):
    device = enrolled(backup_admin)
    client.force_login(backup_admin)

    response = client.post(VERIFY, {"code": code(device), "next": "https://evil.example.com/"})

    assert response["Location"] == reverse("home")


def test_wrong_codes_are_throttled_even_the_right_one_right_after(client, backup_admin):
    device = enrolled(backup_admin)
    client.force_login(backup_admin)

    client.post(VERIFY, {"code": wrong_code(device)})
    throttled = client.post(VERIFY, {"code": code(device)})

    assert "Too many wrong codes" in throttled.text
    assert mfa.SESSION_KEY not in client.session
    device.refresh_from_db()
    assert device.throttling_failure_count >= 1


def test_a_code_is_used_once(client, backup_admin):
    device = enrolled(backup_admin)
    first, second = Client(), Client()
    first.force_login(backup_admin)
    second.force_login(backup_admin)
    current = code(device)

    first.post(VERIFY, {"code": current})
    replay = second.post(VERIFY, {"code": current})

    assert "That code is not right (or was already used)" in replay.text
    assert mfa.SESSION_KEY not in second.session


def test_verify_without_a_device_sends_to_enrolment(client, owner):
    client.force_login(owner)

    response = client.get(VERIFY + "?next=/admin/")

    assert response["Location"] == f"{ENROL}?next=%2Fadmin%2F"


def test_a_session_marked_by_the_identity_provider_has_passed(client, backup_admin):
    client.force_login(backup_admin)
    enrolled(backup_admin)
    assert not passed(client)

    mark_oidc_amr(client)

    assert passed(client)


def test_a_reset_device_stops_counting_at_the_next_request(client, backup_admin):
    device = enrolled(backup_admin)
    client.force_login(backup_admin)
    pass_mfa(client, device)
    assert passed(client)

    device.delete()
    enrolled(backup_admin)  # another device: the page shows "passed" again, read from the session

    assert not passed(client)


# --- The admin: the team resets a lost authenticator -----------------------------------------


def reset(client, device):
    return client.post(
        reverse("admin:otp_totp_totpdevice_changelist"),
        {"action": "reset", "_selected_action": [device.pk]},
        follow=True,
    )


def test_the_admin_lists_devices_without_their_secret(client, backup_admin):
    device = enrolled(factories.UserFactory(username="alice"))
    client.force_login(backup_admin)

    listing = client.get(reverse("admin:otp_totp_totpdevice_changelist"))
    page = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))

    assert listing.status_code == page.status_code == 200
    assert "alice" in listing.text
    secret = b32encode(device.bin_key).decode()
    for text in (listing.text, page.text):
        assert device.key not in text and secret not in text
    assert client.get(reverse("admin:otp_totp_totpdevice_add")).status_code == 403


def test_another_member_of_the_team_with_mfa_resets_a_device(client, backup_admin, second_admin):
    lost = enrolled(second_admin)
    client.force_login(backup_admin)
    pass_mfa(client, enrolled(backup_admin))

    response = reset(client, lost)

    assert not TOTPDevice.objects.filter(pk=lost.pk).exists()
    assert "Reset 1 authenticator(s) of second_admin" in response.text


def test_a_reset_needs_mfa_itself(client, backup_admin, second_admin):
    lost = enrolled(second_admin)
    client.force_login(backup_admin)

    response = reset(client, lost)

    assert TOTPDevice.objects.filter(pk=lost.pk).exists()
    assert "needs a session that passed multi-factor authentication" in response.text


def test_nobody_resets_their_own_device(client, backup_admin):
    mine = enrolled(backup_admin)
    client.force_login(backup_admin)
    pass_mfa(client, mine)

    response = reset(client, mine)

    assert TOTPDevice.objects.filter(pk=mine.pk).exists()
    assert "Nobody resets their own authenticator" in response.text


def test_owners_do_not_see_devices_in_the_admin(client, owner):
    owner.is_staff = True
    owner.save()
    client.force_login(owner)

    assert client.get(reverse("admin:otp_totp_totpdevice_changelist")).status_code == 403
