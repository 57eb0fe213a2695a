"""Codes as an authenticator app computes them (RFC 6238), for the MFA tests."""

from __future__ import annotations

import time

from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity import mfa


def code(device: TOTPDevice, *, steps_from_now: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_from_now * device.step
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    """Six digits the device refuses now (none of the codes its tolerance accepts)."""
    near = {code(device, steps_from_now=s) for s in range(-2, 3)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)


def enrolled(user) -> TOTPDevice:
    """A confirmed authenticator, as if the person had set it up at /account/mfa/."""
    return TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)


def pass_mfa(client, device: TOTPDevice):
    """The person enters the current code on the verify page; the response is returned."""
    return client.post("/account/mfa/verify/", {"code": code(device)})


def mark_oidc_amr(client) -> None:
    """The OpenID Connect sign-in's verdict: the provider's amr said the person used MFA."""
    session = client.session
    session[mfa.SESSION_KEY] = mfa.OIDC_AMR
    session.save()
