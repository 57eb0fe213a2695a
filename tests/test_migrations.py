"""The migrations describe the models exactly: no model change is left without its migration."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()
    try:
        call_command("makemigrations", check=True, dry_run=True, interactive=False, stdout=out, stderr=out)
    except SystemExit as exc:  # makemigrations --check exits 1 when a migration is missing
        pytest.fail(
            f"makemigrations --check found model changes without a migration:\n{out.getvalue()}"
            f"(exit status {exc.code})"
        )
    assert "No changes detected" in out.getvalue()
