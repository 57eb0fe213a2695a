"""Directory groups mirrored into Django groups: added, removed, mapped; the portal's own groups untouched."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from identity import groups
from identity.models import DirectoryAccount, Source
from tests import factories

pytestmark = pytest.mark.django_db


def names(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_groups_are_added_then_removed_as_the_directory_says(settings):
    user = factories.UserFactory()
    added, removed = groups.mirror(user, ["shop-owners", "hr-owners"], source=Source.LDAP, subject="uid=a")
    assert (added, removed) == ({"shop-owners", "hr-owners"}, set())
    added, removed = groups.mirror(user, ["shop-owners"], source=Source.LDAP, subject="uid=a")
    assert (added, removed, names(user)) == (set(), {"hr-owners"}, {"shop-owners"})
    assert DirectoryAccount.objects.get(user=user).source == Source.LDAP


def test_a_mapped_name_lands_in_the_backup_team_group(settings):
    settings.PORTAL_DIRECTORY_GROUP_MAP = {"backup-ops": settings.PORTAL_BACKUP_TEAM_GROUP}
    user = factories.UserFactory()
    groups.mirror(user, ["backup-ops"], source=Source.OIDC, subject="sub-1")
    assert names(user) == {settings.PORTAL_BACKUP_TEAM_GROUP}


def test_groups_given_by_hand_are_left_alone(settings):
    user = factories.UserFactory()
    local = Group.objects.create(name="given-by-hand")
    user.groups.add(local)
    groups.mirror(user, ["shop-owners"], source=Source.OIDC, subject="sub-2")
    groups.mirror(user, [], source=Source.OIDC, subject="sub-2")
    assert names(user) == {"given-by-hand"}


def test_only_the_listed_patterns_are_mirrored(settings):
    settings.PORTAL_DIRECTORY_GROUPS = ["app-*"]
    user = factories.UserFactory()
    groups.mirror(user, ["app-shop", "Domain Users", "everyone"], source=Source.LDAP, subject="uid=b")
    assert names(user) == {"app-shop"}
