"""Multi-factor authentication for the backup team's four-eyes actions: the one place that decides.

A session has passed MFA when ``request.session["identity_mfa"]`` says how:

- ``"oidc-amr"``: the identity provider said so at sign-in (its ``amr``/``acr`` claims;
  set by the OpenID Connect sign-in);
- ``"totp"``: a local account verified a code from its authenticator (identity/views.py),
  and that device still exists — a device the team reset in the admin stops counting at
  the next request, not at the next sign-in.

Approving, rejecting (requests_app.services) and giving a host to an application (the
agent admin) ask here. The doors only say what the session proved (``Actor.mfa``,
decided from the request); the services refuse. ``PORTAL_MFA_FOR_APPROVALS=false`` turns
the rule off, as it was before MFA existed.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device

from core.errors import MfaRequired

SESSION_KEY = "identity_mfa"
TOTP = "totp"
OIDC_AMR = "oidc-amr"


def required() -> bool:
    """Whether four-eyes actions need MFA at all (read at call time, never at import)."""
    return settings.PORTAL_MFA_FOR_APPROVALS


def session_passed_mfa(request) -> bool:
    """Whether this request's session passed multi-factor authentication."""
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    if session is None or user is None or not user.is_authenticated:
        return False
    method = session.get(SESSION_KEY)
    if method == OIDC_AMR:
        return True
    if method == TOTP:
        return _totp_device_still_counts(session, user)
    return False  # not set, or a value nobody defined: not proof of anything


def _totp_device_still_counts(session, user) -> bool:
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    device = Device.from_persistent_id(persistent_id) if persistent_id else None
    return device is not None and device.user_id == user.pk and device.confirmed


def mark_session(request, method: str) -> None:
    """Record that this session passed MFA, and how (``TOTP`` or ``OIDC_AMR``)."""
    request.session[SESSION_KEY] = method


def clear_session(request) -> None:
    """This session's MFA no longer holds (a fresh sign-in without it)."""
    request.session.pop(SESSION_KEY, None)


def verify_url(next_url: str = "") -> str:
    url = reverse("mfa-verify")
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


def refusal_html(text: str, next_url: str = ""):
    """An MFA refusal for an admin message or form error: its words and a link to the code page."""
    return format_html('{} <a href="{}">Enter a code now</a>.', text, verify_url(next_url))


def refusal(action: str, *, next_url: str = "") -> MfaRequired:
    url = verify_url(next_url)
    return MfaRequired(
        f"{action.capitalize()} needs a session that passed multi-factor authentication: "
        f"enter the code from your authenticator at {url} (or sign in with the company account), "
        "then try again.",
        url=url,
    )


def require_mfa(request, action: str) -> None:
    """Raise ``MfaRequired`` unless MFA is off or this session passed it. ``action``: "sharing a host"."""
    if required() and not session_passed_mfa(request):
        raise refusal(action, next_url=request.get_full_path())


def require_for_actor(actor, action: str) -> None:
    """The services' check: a person's session passed MFA, or the API key is an integration's.

    ``actor.mfa`` was decided at the door (``Actor.signed_in``, ``Actor.integration``).
    """
    if not required() or actor.mfa:
        return
    if actor.api_key is not None:
        raise MfaRequired(
            f"{actor.label} is not an integration key: {action} through the API needs a key the backup "
            "team flagged as an integration's (Admin → API keys), or a person in the admin, with MFA."
        )
    raise refusal(action)
