"""Directory groups mirrored into Django groups: the one place that changes a directory user's groups.

An application's ``owner_group`` and the backup-team group are plain Django groups, so
tenancy and roles work unchanged: the directory decides who is in them. At every sign-in
(and every re-check, see ``PORTAL_DIRECTORY_RECHECK_SECONDS``) the user's directory groups
replace their directory-managed Django groups: added and removed. Groups the portal gives
by hand (no ``DirectoryGroup`` row) are left alone.

``PORTAL_DIRECTORY_GROUP_MAP`` maps directory names to portal names (``backup-ops`` →
the backup-team group); ``PORTAL_DIRECTORY_GROUPS`` limits which directory groups are
mirrored at all (glob patterns; empty: every group the directory names).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from identity.models import DirectoryAccount, DirectoryGroup

MAX_GROUP_NAME = 150  # django.contrib.auth.models.Group.name


def portal_names(directory_names: Iterable[str]) -> dict[str, str]:
    """Portal group name → directory name, for the directory's names this portal mirrors."""
    mapping: dict[str, str] = settings.PORTAL_DIRECTORY_GROUP_MAP
    patterns: list[str] = settings.PORTAL_DIRECTORY_GROUPS
    names: dict[str, str] = {}
    for raw in directory_names:
        name = str(raw).strip()
        if not name:
            continue
        mapped = mapping.get(name) or mapping.get(name.lower())
        if mapped is None and patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        portal = (mapped or name)[:MAX_GROUP_NAME]
        names.setdefault(portal, name)
    return names


def mirror(user, directory_names: Iterable[str], *, source: str, subject: str) -> tuple[set[str], set[str]]:
    """Make ``user``'s directory-managed groups exactly ``directory_names`` (mapped); (added, removed).

    Also records the account as the directory's (``DirectoryAccount``: source, subject,
    checked now). Runs in one transaction: a user is never seen half-mirrored.
    """
    wanted = portal_names(directory_names)
    with transaction.atomic():
        DirectoryAccount.objects.update_or_create(
            user=user, defaults={"source": source, "subject": subject[:512], "checked_at": timezone.now()}
        )
        groups = {}
        for portal, directory in wanted.items():
            group, _ = Group.objects.get_or_create(name=portal)
            DirectoryGroup.objects.get_or_create(group=group, defaults={"directory_name": directory[:256]})
            groups[portal] = group
        current = set(
            user.groups.filter(directory__isnull=False).values_list("name", flat=True)
        )
        added = set(groups) - current
        removed = current - set(groups)
        if added:
            user.groups.add(*(groups[name] for name in added))
        if removed:
            user.groups.remove(*Group.objects.filter(name__in=removed, directory__isnull=False))
    return added, removed
