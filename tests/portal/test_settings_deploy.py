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


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """A developer's checkout with nothing configured."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "PORTAL_VAR_DIR": str(tmp_path / "var")}  # fmt: skip


@pytest.mark.parametrize("command", [["check"], ["migrate", "--noinput"], ["runserver", "--noreload"]])
def test_manage_py_with_nothing_configured_refuses_and_says_what_to_set(bare_env, command):
    """No silent development default: the public development key never runs a real server's commands."""
    result = manage(bare_env, *command)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "for development set DEBUG=true" in result.stderr
    assert "Traceback" not in result.stderr  # a message, not a stack
    assert not (Path(bare_env["PORTAL_VAR_DIR"]) / "portal.sqlite3").exists()


def test_a_bare_checkout_checks_its_migrations_with_a_throwaway_key(bare_env):
    """`manage.py makemigrations --check` reads the code only: it needs no configuration."""
    result = manage(bare_env, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


def test_debug_true_is_all_development_needs(bare_env):
    """What `make lint` runs (DEBUG=true manage.py makemigrations --check)."""
    result = manage({**bare_env, "DEBUG": "true"}, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stderr


def test_production_refuses_the_development_key_given_explicitly(production_env):
    from portal.settings import _DEV_SECRET_KEY

    production_env["SECRET_KEY"] = _DEV_SECRET_KEY
    result = manage(production_env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY is the public development key" in result.stderr


# --- Sign-in lockout and the proxies in front -------------------------------------------------------

SHOW = (
    "from django.conf import settings as s; "
    "print(s.AXES_ENABLED, s.NUM_PROXIES, s.REST_FRAMEWORK['NUM_PROXIES'], s.AXES_FAILURE_LIMIT, "
    "int(s.AXES_COOLOFF_TIME.total_seconds()), s.AXES_LOCKOUT_PARAMETERS, s.AUTHENTICATION_BACKENDS[0], "
    "s.MIDDLEWARE[-1], sep='|')"
)


def test_lockout_and_proxy_defaults(production_env):
    result = manage(production_env, "shell", "--verbosity", "0", "--command", SHOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("|") == [
        "True", "0", "0", "5", "900", "[['username', 'ip_address']]",
        "axes.backends.AxesStandaloneBackend", "axes.middleware.AxesMiddleware",
    ]  # fmt: skip


def test_lockout_and_proxy_settings_come_from_the_environment(production_env):
    production_env.update(NUM_PROXIES="1", LOGIN_FAILURE_LIMIT="3", LOGIN_LOCKOUT_MINUTES="30")
    result = manage(production_env, "shell", "--verbosity", "0", "--command", SHOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("|")[:5] == ["True", "1", "1", "3", "1800"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NUM_PROXIES", "-1", "NUM_PROXIES=-1 must be at least 0"),
        ("NUM_PROXIES", "one", "NUM_PROXIES='one' is not an integer"),
        ("LOGIN_FAILURE_LIMIT", "0", "LOGIN_FAILURE_LIMIT=0 must be at least 1"),
        ("LOGIN_FAILURE_LIMIT", "five", "LOGIN_FAILURE_LIMIT='five' is not an integer"),
        ("LOGIN_LOCKOUT_MINUTES", "0", "LOGIN_LOCKOUT_MINUTES=0 must be at least 1"),
        ("LOGIN_LOCKOUT_MINUTES", "15m", "LOGIN_LOCKOUT_MINUTES='15m' is not an integer"),
    ],
)
def test_lockout_and_proxy_settings_are_parsed_strictly(production_env, name, value, message):
    production_env[name] = value
    result = manage(production_env, "check")
    assert result.returncode != 0
    assert message in result.stderr


def test_the_web_server_never_takes_the_development_default(bare_env):
    result = subprocess.run(
        [sys.executable, "-c", "import portal.wsgi"],
        cwd=REPO,
        env=bare_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
