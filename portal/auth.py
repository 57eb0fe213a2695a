"""Signing in, with repeated failures throttled per user name and per client address.

After ``FAILURE_LIMIT`` failed attempts for the same user name, or from the same
address, within ``WINDOW`` seconds of the first, every further attempt is
refused — even with the right password — until the window ends. Counting both
keys stops a guesser trying one account from many addresses and one address
trying many accounts.

The counters live in Django's default cache. With the default LocMemCache that
is per process: behind N gunicorn workers an attacker gets up to N × the limit.
Configure a shared cache (Redis, database) in CACHES to make it exact.
"""

from __future__ import annotations

import hashlib
import math
import time

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest

FAILURE_LIMIT = 5
WINDOW = 15 * 60  # seconds, from the first failure


def _keys(request: HttpRequest | None, username: str) -> tuple[str, str]:
    # REMOTE_ADDR, not X-Forwarded-For: a client sets that header to whatever it likes.
    # Behind a proxy, the proxy should rewrite REMOTE_ADDR (e.g. gunicorn --forwarded-allow-ips).
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    return f"login-fail:addr:{address}", f"login-fail:user:{name}"


def seconds_blocked(request: HttpRequest | None, username: str) -> int:
    """How long further attempts are refused (0: not throttled)."""
    now = time.time()
    waits = [
        entry["until"] - now
        for entry in cache.get_many(_keys(request, username)).values()
        if entry["count"] >= FAILURE_LIMIT and entry["until"] > now
    ]
    return math.ceil(max(waits)) if waits else 0


def record_failure(request: HttpRequest | None, username: str) -> None:
    # Read-modify-write without a lock: two simultaneous failures may count as one,
    # which costs an attacker nothing worth having (one extra guess per window).
    now = time.time()
    for key in _keys(request, username):
        entry = cache.get(key) or {"count": 0, "until": now + WINDOW}
        entry["count"] += 1
        cache.set(key, entry, timeout=max(1, math.ceil(entry["until"] - now)))


def record_success(request: HttpRequest | None, username: str) -> None:
    # Only the user name's counter: whoever owns an account must not be able to
    # wipe the address counter between guesses at somebody else's.
    cache.delete(_keys(request, username)[1])


def throttled_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        "Too many failed sign-in attempts. For your security, signing in is blocked for "
        f"{minutes} more minute{'s' if minutes != 1 else ''}."
    )


class ThrottleMixin:
    """For an AuthenticationForm: refuse while throttled, count failed passwords."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        wait = seconds_blocked(self.request, username)
        if wait:
            raise ValidationError(throttled_message(wait), code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            # A wrong password, not a right one refused for another reason (inactive,
            # or an owner trying the admin): only those count against the limit.
            if self.user_cache is None and username:
                record_failure(self.request, username)
            raise
        record_success(self.request, username)
        return cleaned


class ThrottledAuthenticationForm(ThrottleMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottleMixin, AdminAuthenticationForm):
    """The admin's sign-in form with the same limit: one door must not bypass the other."""


class PortalLoginView(LoginView):
    template_name = "registration/login.html"
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True
