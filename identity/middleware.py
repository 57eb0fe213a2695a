"""Directory users are read again while they work: removed from a group, they lose it within minutes.

A signed-in directory user (one with a ``DirectoryAccount``) whose groups were last read more
than ``PORTAL_DIRECTORY_RECHECK_SECONDS`` ago is read again at their next request, through the
re-check registered for their account's source in ``RECHECKS``:

- still there and enabled: their groups are mirrored again (added and removed);
- gone, disabled, or no longer the directory's: the user is deactivated (``is_active=False``,
  which also stops their API keys) and signed out;
- the directory cannot be reached: the session is kept for a grace of one more period after
  the re-check was due, with a new attempt at most every ``RETRY_SECONDS``; past the grace the
  session ends (fail closed), and signing in again needs the directory. The user is not
  deactivated: an outage is no reason to lock anybody out for good.

Which sessions are a directory's: those signed in by one of ``DIRECTORY_BACKENDS``, read from
the session Django keeps anyway, so a local account's requests cost no query at all. A directory
session remembers when its next re-check is due, so its requests between re-checks cost none
either. ``identity.tasks.recheck_directory_users`` re-checks users who make no request.
"""

from __future__ import annotations

import enum
import logging
import time

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model, logout
from django.utils import timezone
from django.utils.module_loading import import_string

from identity.models import DirectoryAccount, Source

logger = logging.getLogger(__name__)

#: Source → dotted path of ``recheck(user) -> bool`` (True: still valid and groups mirrored;
#: False: gone or disabled; raises DirectoryUnavailable when the directory cannot say). A source
#: without an entry is not re-checked. Dotted paths, so this module imports no directory client.
RECHECKS: dict[str, str] = {
    Source.LDAP: "identity.ldap.recheck",
    # Takes the request too (its session keeps the refresh token): see NEEDS_REQUEST.
    Source.OIDC: "identity.oidc.recheck",
}
#: Sources whose re-check is ``recheck(user, request)``: only possible in the middleware, with a session.
NEEDS_REQUEST = {Source.OIDC}
#: The backends whose sessions are re-checked (the session records which backend signed it in).
DIRECTORY_BACKENDS = frozenset({"identity.ldap.LDAPBackend", "identity.oidc.OIDCBackend"})

SESSION_KEY = "identity_recheck_due"  # time.time() of the next re-check
# While the directory is unreachable, one session tries again at most this often (not every request,
# each waiting for the connect timeout).
RETRY_SECONDS = 30


class DirectoryUnavailable(Exception):
    """The directory could not say whether the user is still there (down, timed out, misconfigured)."""


class Outcome(enum.Enum):
    VALID = "valid"
    GONE = "gone"
    UNREACHABLE = "unreachable"
    NOT_CHECKED = "not checked"


def recheck_account(account: DirectoryAccount, request=None) -> Outcome:
    """Ask the account's directory again; a user it no longer vouches for is deactivated."""
    path = RECHECKS.get(account.source)
    if path is None:
        return Outcome.NOT_CHECKED
    try:
        if account.source in NEEDS_REQUEST:
            valid = import_string(path)(account.user, request)
        else:
            valid = import_string(path)(account.user)
    except DirectoryUnavailable as exc:
        logger.warning("Re-check of %s: the directory cannot be reached (%s)", account.user, exc)
        return Outcome.UNREACHABLE
    if valid:
        return Outcome.VALID
    deactivate(account.user)
    return Outcome.GONE


def deactivate(user) -> None:
    # update(), not save(): the user object may carry changes the directory never made.
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    logger.warning("Deactivated %s: gone or disabled in the directory", user)


class DirectoryRecheckMiddleware:
    """After AuthenticationMiddleware: re-checks the signed-in directory user when it is due."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.session.get(BACKEND_SESSION_KEY) in DIRECTORY_BACKENDS and request.user.is_authenticated:
            self.check(request)
        return self.get_response(request)

    def check(self, request) -> None:
        now = time.time()
        due = request.session.get(SESSION_KEY)
        if due is not None and now < due:
            return
        period = settings.PORTAL_DIRECTORY_RECHECK_SECONDS
        account = DirectoryAccount.objects.select_related("user").filter(user=request.user).first()
        if account is None:  # nothing the directory recorded to read again (the backends always record)
            request.session[SESSION_KEY] = now + period
            return
        age = (timezone.now() - account.checked_at).total_seconds()
        if age < period:  # read recently: at sign-in, by the periodic task or in another session
            request.session[SESSION_KEY] = now + period - age
            return
        outcome = recheck_account(account, request)
        if not request.user.is_authenticated:
            return  # the re-check itself signed the session out
        if outcome is Outcome.GONE:
            logout(request)
        elif outcome is Outcome.UNREACHABLE:
            grace_left = 2 * period - age  # due at `period`, kept for one more
            if grace_left <= 0:
                logger.warning("Signed %s out: no word from the directory for %d s", account.user, age)
                logout(request)
            else:
                request.session[SESSION_KEY] = now + min(RETRY_SECONDS, grace_left)
        else:
            request.session[SESSION_KEY] = now + period
