"""Signing out: the portal's session, then the identity provider's when it has one for us.

And the authenticator pages (/account/mfa/, below): a TOTP device counts only once a code
from it has been verified (``confirmed``); until then the same secret is shown again, so a
reload does not invalidate what the person already scanned. The secret appears on the
enrolment page only — never in a log, a message or another page — and the page is not
cached. Wrong codes are throttled per device by django-otp (1, 2, 4, 8… seconds).
"""

from __future__ import annotations

from base64 import b32encode

import qrcode
import qrcode.image.svg
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LogoutView as DjangoLogoutView
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity import mfa, oidc


class LogoutView(DjangoLogoutView):
    """Django's sign-out; for an OpenID Connect session, then on to the provider's end_session_endpoint.

    Without that second step the provider's own session would sign the person straight back in
    at the next "Sign in with …". The provider sends them back to the sign-in page.
    """

    def post(self, request, *args, **kwargs):
        provider_url = oidc.end_session_url(request)  # before the session (and its ID token) is gone
        response = super().post(request, *args, **kwargs)
        return HttpResponseRedirect(provider_url) if provider_url else response


# --- The authenticator (TOTP): /account/mfa/ ----------------------------------------------------


class CodeForm(forms.Form):
    code = forms.RegexField(
        label="Code",
        regex=r"^\d{6}$",
        strip=True,
        error_messages={"invalid": "Enter the six digits your authenticator shows."},
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "one-time-code", "autofocus": True, "size": 8}
        ),
    )


def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(candidate, {request.get_host()}, require_https=request.is_secure()):
        return candidate
    return ""


def _check_code(device_pk: int, code: str) -> tuple[TOTPDevice | None, str]:
    """(the device, "") when ``code`` is right, else (None, why not). Throttled by django-otp."""
    with transaction.atomic():
        # Locked: two submissions of one code must not both pass, nor race the failure count.
        device = TOTPDevice.objects.select_for_update().get(pk=device_pk)
        allowed, why = device.verify_is_allowed()
        if not allowed:
            locked_until = (why or {}).get("locked_until") or timezone.now()
            wait = max(1, int((locked_until - timezone.now()).total_seconds()) + 1)
            return None, f"Too many wrong codes: wait {wait} seconds, then enter the current code."
        if device.verify_token(code):
            return device, ""
    return None, "That code is not right (or was already used). Enter the code your authenticator shows now."


def _passed(request: HttpRequest, device: TOTPDevice) -> HttpResponse:
    # A new session key for a session that has just become more powerful (fixation).
    request.session.cycle_key()
    otp_login(request, device)
    mfa.mark_session(request, mfa.TOTP)
    messages.success(request, "Code accepted: this session may approve, reject and share hosts.")
    return redirect(_next_url(request) or "home")


def _qr_svg(url: str) -> str:
    image = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    return image.to_string(encoding="unicode")


@never_cache
@login_required
def mfa_enrol(request: HttpRequest) -> HttpResponse:
    """Add an authenticator: scan the QR code (or type the secret), then prove it with a code."""
    if TOTPDevice.objects.devices_for_user(request.user, confirmed=True).exists():
        context = {"passed": mfa.session_passed_mfa(request), "next": _next_url(request)}
        return render(request, "identity/mfa_enrolled.html", context)
    device = TOTPDevice.objects.devices_for_user(request.user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=request.user, name="Authenticator", confirmed=False)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        verified, why = _check_code(device.pk, form.cleaned_data["code"])
        if verified is not None:
            verified.confirmed = True
            verified.save(update_fields=["confirmed"])
            return _passed(request, verified)
        form.add_error("code", why)
    secret = b32encode(device.bin_key).decode()
    context = {
        "form": form,
        "qr_svg": mark_safe(_qr_svg(device.config_url)),  # noqa: S308 - made here from the device's URL
        "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "next": _next_url(request),
    }
    return render(request, "identity/mfa_enrol.html", context)


@never_cache
@login_required
def mfa_verify(request: HttpRequest) -> HttpResponse:
    """"Enter the code from your authenticator": the session passes MFA."""
    device = TOTPDevice.objects.devices_for_user(request.user, confirmed=True).first()
    if device is None:
        next_url = _next_url(request)
        query = f"?{urlencode({'next': next_url})}" if next_url else ""
        return redirect(reverse("mfa-enrol") + query)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        verified, why = _check_code(device.pk, form.cleaned_data["code"])
        if verified is not None:
            return _passed(request, verified)
        form.add_error("code", why)
    return render(request, "identity/mfa_verify.html", {"form": form, "next": _next_url(request)})
