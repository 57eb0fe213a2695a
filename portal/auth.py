"""Signing in, with repeated failures locked out per pair of user name and client address.

django-axes counts the failures (settings ``AXES_*``, from ``LOGIN_FAILURE_LIMIT`` and
``LOGIN_LOCKOUT_MINUTES``). Its backend comes first in ``AUTHENTICATION_BACKENDS`` and
refuses a locked pair before any password is checked, so the right password is refused
too until the lock ends. The failures are kept in the database, so every gunicorn worker
sees the same count.

The pair, not the user name alone nor the address alone: behind the reverse proxy many
people may arrive from one address, and user names are no secret, so a lock on either
alone would let one guesser lock everybody else out. The address is the one the REST
framework's throttles use, decided by ``NUM_PROXIES`` (see ``client_ip``).

What lives here: that address, the message on both sign-in pages (the portal's and the
admin's, one count for both), and the response to a locked-out attempt.
"""

from __future__ import annotations

import ipaddress
import math

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from rest_framework.throttling import BaseThrottle

LOCKED_OUT = 429  # Too Many Requests, as django-axes answers by default


def client_ip(request: HttpRequest) -> str | None:
    """The client's address (``AXES_CLIENT_IP_CALLABLE``).

    ``REMOTE_ADDR`` with ``NUM_PROXIES=0``; with ``NUM_PROXIES=n``, the n-th entry of
    ``X-Forwarded-For`` from the right, the one the outermost trusted proxy appended.
    It is the REST framework's own rule (``BaseThrottle.get_ident``, reading
    ``REST_FRAMEWORK["NUM_PROXIES"]``), so sign-in and the API never disagree about
    who a client is. django-ipware's proxy count means something else (proxies listed
    inside the header; nginx's own address is not) and yields no address at all for
    a chain of another length, which would pool every attempt at a user name.

    An entry that is not an IP address (only possible when NUM_PROXIES exceeds the
    real chain, letting a client's own header through) counts as ``REMOTE_ADDR``.
    """
    ident = BaseThrottle().get_ident(request)
    try:
        return str(ipaddress.ip_address(ident))
    except ValueError:
        return request.META.get("REMOTE_ADDR")


def lockout_minutes(request: HttpRequest | None = None) -> int:
    cool_off = get_cool_off(request)
    return max(1, math.ceil(cool_off.total_seconds() / 60)) if cool_off else 0


def lockout_message(request: HttpRequest | None = None) -> str:
    minutes = lockout_minutes(request)
    return (
        "Too many failed sign-in attempts for this user name from your address. "
        f"Wait {minutes} minute{'s' if minutes != 1 else ''}, then try again: until then every "
        "attempt is refused, even with the right password, and starts the wait again."
    )


class LockoutMessageMixin:
    """For an AuthenticationForm: say so when django-axes refused (or just locked) the pair."""

    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            # Set by django-axes on the attempt that reached the limit and on every one after.
            if getattr(self.request, "axes_locked_out", False):
                raise ValidationError(lockout_message(self.request), code="locked_out") from None
            raise


class SignInForm(LockoutMessageMixin, AuthenticationForm):
    pass


class AdminSignInForm(LockoutMessageMixin, AdminAuthenticationForm):
    """The admin's sign-in form: the same count, so one door does not bypass the other."""


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """What a locked-out attempt gets (``AXES_LOCKOUT_CALLABLE``), with status 429.

    The sign-in page it was made on, its form showing the message — not a bare error
    page, and whichever door it was (portal or admin). Any other page that signs in
    gets a page with the same message.
    """
    if isinstance(original_response, TemplateResponse):
        form = (original_response.context_data or {}).get("form")
        if form is not None and form.has_error(NON_FIELD_ERRORS, "locked_out"):
            original_response.status_code = LOCKED_OUT
            return original_response
    return render(
        request, "registration/locked_out.html", {"message": lockout_message(request)}, status=LOCKED_OUT
    )


class PortalLoginView(LoginView):
    template_name = "registration/login.html"
    authentication_form = SignInForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        ldap = bool(getattr(settings, "LDAP_SERVER_URI", ""))
        context.update(
            oidc_enabled=bool(settings.OIDC_ISSUER),
            oidc_provider_name=settings.OIDC_PROVIDER_NAME,
            ldap_enabled=ldap,
            # The form: for the directory over LDAP, for local (break-glass) accounts, or both.
            show_form=ldap or settings.PORTAL_LOCAL_LOGIN,
            local_login=settings.PORTAL_LOCAL_LOGIN,
        )
        if settings.OIDC_ISSUER:
            # The button is the way in; the break-glass form does not take the focus.
            context["form"].fields["username"].widget.attrs.pop("autofocus", None)
        return context


class LocalPasswordBackend(ModelBackend):
    """Django's own user name and password, unless ``PORTAL_LOCAL_LOGIN=false``.

    The switch is here, not in a form, so it holds for every door that checks a password:
    the portal's sign-in page and the admin's alike. Sessions already open, permissions and
    API keys are untouched. Directory accounts have no usable password, so this backend
    never signs them in either way.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.PORTAL_LOCAL_LOGIN:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
