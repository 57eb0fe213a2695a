"""Personas and shared fixtures. Every test that needs a user takes one of these."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Imports of Django code stay inside the fixtures: tests/agent runs without Django.
# The browser fixtures (Playwright driving Debian's chromium, which `make test` installs; no
# browser download) serve tests/browser and the end-to-end tests that look at pages.


@pytest.fixture(autouse=True)
def index_root(tmp_path, monkeypatch):
    """Each test keeps recovery points' file lists in its own folder (job ids repeat between tests)."""
    from django.conf import settings

    root = tmp_path / "indexes"
    monkeypatch.setattr(settings, "PORTAL_INDEX_ROOT", root)
    return root


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


@pytest.fixture
def second_admin(backup_team_group):
    """Another member of the backup team: four eyes need two."""
    from tests import factories

    user = factories.UserFactory(username="second_admin", is_staff=True)
    user.groups.add(backup_team_group)
    return user


# --- Signed in (pytest-django's test client, not a BackupClient) ---------------------------------


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def other_client(client, other_owner):
    client.force_login(other_owner)
    return client


@pytest.fixture
def team_client(client, backup_admin):
    client.force_login(backup_admin)
    return client


@pytest.fixture
def root_client(client, superuser):
    client.force_login(superuser)
    return client


# --- Estates and policies ---------------------------------------------------------------------


@pytest.fixture
def mine(app):
    """``owner``'s estate: an agent, a protected client and a recent recovery point of ``app``."""
    from tests import factories

    return factories.build_estate(app)


@pytest.fixture
def theirs(other_app):
    """The same for ``other_owner``'s ``other_app``."""
    from tests import factories

    return factories.build_estate(other_app)


@pytest.fixture
def auto_policy(db):
    """A policy whose new clients need no approval."""
    from tests import factories

    return factories.ProtectionPolicyFactory(name="Silver", auto_approve_clients=True)


@pytest.fixture
def manual_policy(db):
    """A policy whose new clients wait for the backup team."""
    from tests import factories

    return factories.ProtectionPolicyFactory(name="Gold", auto_approve_clients=False)


# --- State that outlives a test -----------------------------------------------------------------


@pytest.fixture
def fresh_cache():
    """An empty cache before and after the test: throttle and sign-in failure counters live there."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


ARTEFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # tests make between page actions are plain synchronous code.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshot():
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = ARTEFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
