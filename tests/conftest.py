"""Personas and shared fixtures. Every test that needs a user takes one of these."""

from __future__ import annotations

import pytest

# Imports of Django code stay inside the fixtures: tests/agent runs without Django.


@pytest.fixture
def backup_team_group(db):
    from django.conf import settings
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name=settings.PORTAL_BACKUP_TEAM_GROUP)
    return group


@pytest.fixture
def owner(db):
    """Owns application ``app``."""
    from tests import factories

    return factories.UserFactory(username="owner")


@pytest.fixture
def other_owner(db):
    """Owns application ``other_app`` and nothing of ``owner``'s."""
    from tests import factories

    return factories.UserFactory(username="other_owner")


@pytest.fixture
def backup_admin(backup_team_group):
    """A member of the backup team, staff, not a superuser."""
    from tests import factories

    user = factories.UserFactory(username="backup_admin", is_staff=True)
    user.groups.add(backup_team_group)
    return user


@pytest.fixture
def superuser(db):
    from tests import factories

    return factories.UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def app(owner):
    from tests import factories

    return factories.ApplicationFactory(slug="orders", name="Orders", owners=[owner])


@pytest.fixture
def other_app(other_owner):
    from tests import factories

    return factories.ApplicationFactory(slug="payroll", name="Payroll", owners=[other_owner])
