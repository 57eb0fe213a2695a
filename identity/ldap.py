"""LDAP / Active Directory sign-in, through django-auth-ldap, configured by the ``LDAP_*`` settings.

The sign-in form tries the local accounts first (``ModelBackend``), then this backend, which
finds the user with the service account (``LDAP_BIND_DN``), binds as them with the password
typed, refuses a disabled account (``LDAP_DISABLED_FILTER``), creates or updates the Django
user (names, e-mail) and mirrors their directory groups (``identity.groups.mirror``).

Who the directory may sign in (the point: a directory user never takes over a local admin by
name). An existing portal account with the same user name is signed in only if it is the
directory's own (a ``DirectoryAccount`` from LDAP), or it carries nothing to take over: no
usable password, not staff, not superuser (an account created ahead of the person's first
sign-in). A local account with a password is a break-glass account: its name is never even
sent to the directory with a password, so the directory cannot learn it either. An account
that signs in through OpenID Connect does not sign in through LDAP.

A directory that cannot be reached (down, timed out, or refusing the service account) is an
error on the sign-in form, not a wrong password: nothing was checked, so django-axes counts no
failure (an outage must not lock everybody out). Local accounts still sign in, since they are
tried first. A wrong password is the usual message and counts towards the lockout.

``recheck(user)`` reads a signed-in user again (identity.middleware, identity.tasks).
"""

from __future__ import annotations

import logging

import ldap
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django_auth_ldap import backend as auth_ldap
from django_auth_ldap.config import (
    ActiveDirectoryGroupType,
    GroupOfNamesType,
    LDAPSearch,
    LDAPSettings,
    NestedActiveDirectoryGroupType,
    NestedGroupOfNamesType,
    PosixGroupType,
)

from identity.groups import mirror
from identity.middleware import DirectoryUnavailable
from identity.models import DirectoryAccount, Source

logger = logging.getLogger(__name__)

UNREACHABLE_MESSAGE = "The company directory cannot be reached; break-glass accounts can still sign in."

#: LDAP_GROUP_TYPE → (django-auth-ldap's group type, the object class its groups carry).
GROUP_TYPES = {
    "groupOfNames": (GroupOfNamesType, "(objectClass=groupOfNames)"),
    "nestedGroupOfNames": (NestedGroupOfNamesType, "(objectClass=groupOfNames)"),
    "posixGroup": (PosixGroupType, "(objectClass=posixGroup)"),
    "activeDirectory": (ActiveDirectoryGroupType, "(objectClass=group)"),
    "nestedActiveDirectory": (NestedActiveDirectoryGroupType, "(objectClass=group)"),
}


def options() -> dict:
    """django-auth-ldap's settings, from the portal's ``LDAP_*`` ones (read when a backend is made)."""
    group_type, group_class = GROUP_TYPES[settings.LDAP_GROUP_TYPE]
    connection = {
        # Active Directory answers a search at the domain root with referrals to other
        # partitions; python-ldap would follow them anonymously, and hang or fail.
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_NETWORK_TIMEOUT: settings.LDAP_NETWORK_TIMEOUT,
        ldap.OPT_TIMEOUT: settings.LDAP_TIMEOUT,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
    }
    if settings.LDAP_CA_FILE:
        connection[ldap.OPT_X_TLS_CACERTFILE] = settings.LDAP_CA_FILE
    # Last: the TLS options above apply to this connection only once a new TLS context is made.
    connection[ldap.OPT_X_TLS_NEWCTX] = 0
    group_base = settings.LDAP_GROUP_SEARCH_BASE
    return {
        "SERVER_URI": settings.LDAP_SERVER_URI,
        "BIND_DN": settings.LDAP_BIND_DN,
        "BIND_PASSWORD": settings.LDAP_BIND_PASSWORD,
        "START_TLS": settings.LDAP_START_TLS,
        "CONNECTION_OPTIONS": connection,
        "USER_SEARCH": LDAPSearch(
            settings.LDAP_USER_SEARCH_BASE, ldap.SCOPE_SUBTREE, settings.LDAP_USER_FILTER
        ),
        "GROUP_SEARCH": LDAPSearch(group_base, ldap.SCOPE_SUBTREE, group_class) if group_base else None,
        "GROUP_TYPE": group_type(),
        "USER_ATTR_MAP": {
            "first_name": settings.LDAP_ATTR_FIRST_NAME,
            "last_name": settings.LDAP_ATTR_LAST_NAME,
            "email": settings.LDAP_ATTR_EMAIL,
        },
        "ALWAYS_UPDATE_USER": True,
        # Groups are mirrored by identity.groups (the one place), permissions come from Django groups.
        "MIRROR_GROUPS": None,
        "FIND_GROUP_PERMS": False,
        "CACHE_TIMEOUT": 0,
    }


def directory_groups(ldap_user) -> list[str]:
    """The names of the user's groups (nested ones too, for the nested group types)."""
    if ldap_user.settings.GROUP_SEARCH is None:
        return []
    return sorted(ldap_user.group_names)


def is_disabled(ldap_user) -> bool:
    """Whether ``LDAP_DISABLED_FILTER`` matches the user's entry (read with the service account)."""
    disabled_filter = settings.LDAP_DISABLED_FILTER
    if not disabled_filter:
        return False
    found = ldap_user.connection.search_s(ldap_user.dn, ldap.SCOPE_BASE, disabled_filter, ["1.1"])
    return any(dn for dn, _ in found)  # Active Directory may add referrals, which have no DN


def refused_account(user, dn: str) -> str | None:
    """Why the directory may not sign in the existing portal ``user`` (see the module's docstring)."""
    account = DirectoryAccount.objects.filter(user=user).first()
    if account is not None:
        if account.source != Source.LDAP:
            return f"the account signs in through {account.get_source_display()}"
    elif user.has_usable_password() or user.is_staff or user.is_superuser:
        return "a local account of the same name exists (break-glass accounts are never the directory's)"
    clash = DirectoryAccount.objects.filter(source=Source.LDAP, subject=dn[:512]).exclude(user=user).first()
    if clash is not None:
        # Renamed in the directory (same entry, new name): an administrator renames the portal user.
        return f"the directory entry belongs to the portal user {clash.user}"
    return None


def local_account_exists(username: str) -> bool:
    """A portal account of this name that is no directory account and has a password: break-glass."""
    candidates = get_user_model().objects.filter(username__iexact=username, directory__isnull=True)
    return any(user.has_usable_password() for user in candidates)


class LDAPBackend(auth_ldap.LDAPBackend):
    """django-auth-ldap's backend with the portal's settings, rules and group mirror."""

    @property
    def settings(self) -> LDAPSettings:
        if self._settings is None:
            self._settings = LDAPSettings(self.settings_prefix, options())
        return self._settings

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.LDAP_SERVER_URI or not username or not password:
            return None
        if local_account_exists(username.strip()):
            return None  # a break-glass account's password never goes to the directory
        try:
            return super().authenticate(request, username=username, password=password, **kwargs)
        except DirectoryUnavailable:
            # On the form, as its non-field error: not "wrong password", and no failure counted.
            raise ValidationError(UNREACHABLE_MESSAGE, code="directory_unavailable") from None

    def get_user(self, user_id):
        user = super().get_user(user_id)
        # As ModelBackend: a deactivated user's session ends (LDAPBackend would keep it).
        return user if user is not None and user.is_active else None

    def get_group_permissions(self, user, obj=None):
        return set()  # permissions come from the mirrored Django groups, through ModelBackend

    def get_or_build_user(self, username, ldap_user):
        user, built = super().get_or_build_user(username, ldap_user)
        if not built:
            reason = refused_account(user, ldap_user.dn)
            if reason:
                logger.warning("LDAP sign-in of %s refused: %s", username, reason)
                raise ldap_user.AuthenticationFailed(reason)
        if is_disabled(ldap_user):
            logger.info("LDAP sign-in of %s refused: disabled in the directory", username)
            raise ldap_user.AuthenticationFailed("disabled in the directory")
        # Read now, inside django-auth-ldap's error handling, before the user is saved.
        directory_groups(ldap_user)
        return user, built

    def authenticate_ldap_user(self, ldap_user, password):
        return self._mirrored(super().authenticate_ldap_user(ldap_user, password))

    def populate_user(self, username):
        return self._mirrored(super().populate_user(username))

    def _mirrored(self, user):
        if user is not None:
            mirror(user, directory_groups(user.ldap_user), source=Source.LDAP, subject=user.ldap_user.dn)
        return user


def _unreachable(sender, context, user, request, exception, **kwargs) -> None:
    """django-auth-ldap logs an LDAP error and carries on as "no such user": stop it, say why."""
    raise DirectoryUnavailable(f"LDAP {context}: {exception!r}") from exception


auth_ldap.ldap_error.connect(_unreachable, sender=LDAPBackend, dispatch_uid="identity.ldap.unreachable")


def recheck(user) -> bool:
    """Read ``user`` from the directory again, as at sign-in, and mirror their groups.

    True: still there and enabled. False: gone, disabled, or no longer the directory's to
    sign in. Raises ``DirectoryUnavailable`` when the directory cannot say.
    """
    if not settings.LDAP_SERVER_URI:
        raise DirectoryUnavailable("LDAP sign-in is off (LDAP_SERVER_URI is empty)")
    return LDAPBackend().populate_user(user.get_username()) is not None
