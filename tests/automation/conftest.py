"""The estate the automation tests share: ``owner``'s Orders and ``other_owner``'s Payroll, each with
clients, the backup team with a shared mailbox, and alerts raised the way the watches raise them."""

from __future__ import annotations

import pytest

from tests import factories
from tests.automation.team import TEAM_ADDRESS


@pytest.fixture(autouse=True)
def _team_mailbox(settings):
    settings.PORTAL_BACKUP_TEAM_EMAIL = TEAM_ADDRESS
    settings.PORTAL_BASE_URL = "https://backup.example.com"


@pytest.fixture
def orders_clients(app):
    """Three clients of Orders, named so the digest lists them in a known order."""
    return [
        factories.BackupClientFactory(application=app, name=name)
        for name in ("db01-pg", "files-web", "mysql")
    ]


@pytest.fixture
def payroll_client(other_app):
    return factories.BackupClientFactory(application=other_app, name="payroll-db")
