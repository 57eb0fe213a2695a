"""Production settings, as a fresh process reads them from the environment.

Each test starts ``manage.py`` in a subprocess with an environment built from
nothing, so neither the suite's DJANGO_SETTINGS_MODULE nor the SECRET_KEY
that ``portal.test_settings`` puts in ``os.environ`` leaks in.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_env(tmp_path) -> dict[str, str]:
    """What an operator sets for a single-machine production install."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),  # 64 characters of many kinds
        "ALLOWED_HOSTS": "portal.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
    }


def manage(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_check_deploy_without_a_warning(production_env):
    result = manage(production_env, "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in output


def test_secret_key_may_come_from_a_file(production_env, tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text(production_env.pop("SECRET_KEY") + "\n")
    production_env["SECRET_KEY_FILE"] = str(secret)
    result = manage(production_env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_catches_a_weak_secret_key(production_env):
    """The check above is worth something: a short key is reported and fails the run."""
    production_env["SECRET_KEY"] = "changeme"
    result = manage(production_env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(production_env):
    del production_env["SECRET_KEY"]
    result = manage(production_env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_misspelt_debug_stops_start_up_with_a_clear_message(production_env):
    production_env["DEBUG"] = "Fasle"
    result = manage(production_env, "check")
    assert result.returncode != 0
    assert "DEBUG='Fasle' is not a boolean" in result.stderr


def test_manage_py_on_an_unconfigured_checkout_runs_with_development_settings(tmp_path):
    bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "PORTAL_VAR_DIR": str(tmp_path / "var")}  # fmt: skip
    result = manage(bare, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stderr


def test_the_web_server_never_takes_the_development_default(tmp_path):
    bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "PORTAL_VAR_DIR": str(tmp_path / "var")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", "import portal.wsgi"],
        cwd=REPO,
        env=bare,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
