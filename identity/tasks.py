"""Background task functions of identity (periodic, listed in core.periodic)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from identity.middleware import Outcome, recheck_account
from identity.models import DirectoryAccount, Source

log = logging.getLogger(__name__)

# Per run (every 5 minutes): a directory of thousands is read in turns, the longest-unread first.
BATCH = 500


def recheck_directory_users() -> int:
    """Re-check LDAP users whose groups were last read over ``PORTAL_DIRECTORY_RECHECK_SECONDS`` ago.

    The middleware re-checks people who make requests; this reaches those who do not, so a user
    disabled in the directory is deactivated (and their API keys stop working) within the period
    plus five minutes. OpenID Connect users cannot be read without them (no token): the
    middleware and the provider's session limit those. Returns how many were deactivated.
    """
    if not settings.LDAP_SERVER_URI:
        return 0
    cutoff = timezone.now() - timedelta(seconds=settings.PORTAL_DIRECTORY_RECHECK_SECONDS)
    accounts = (
        DirectoryAccount.objects.select_related("user")
        .filter(source=Source.LDAP, checked_at__lt=cutoff, user__is_active=True)
        .order_by("checked_at")[:BATCH]
    )
    deactivated = 0
    for account in accounts:
        outcome = recheck_account(account)
        if outcome is Outcome.UNREACHABLE:
            break  # the next run tries again; nobody is deactivated for an outage
        deactivated += outcome is Outcome.GONE
    if deactivated:
        log.warning("deactivated %d directory user(s) gone or disabled in the directory", deactivated)
    return deactivated
