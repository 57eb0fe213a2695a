"""The LDAP_* settings as a fresh process reads them from the environment: strict, *_FILE for secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READ = (
    "import json; from portal import settings as s; print(json.dumps({"
    "'backends': s.AUTHENTICATION_BACKENDS, 'password': s.LDAP_BIND_PASSWORD,"
    "'disabled': s.LDAP_DISABLED_FILTER, 'filter': s.LDAP_USER_FILTER}))"
)


def read_settings(tmp_path, **variables: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DEBUG": "true",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", READ], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )


def settings_of(tmp_path, **variables: str) -> dict:
    result = read_settings(tmp_path, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ldap_is_off_and_out_of_the_backends_without_a_server(tmp_path):
    assert "identity.ldap.LDAPBackend" not in settings_of(tmp_path)["backends"]


def test_a_server_puts_the_backend_after_the_local_accounts(tmp_path):
    secret = tmp_path / "bind-password"
    secret.write_text("s3cret\n")
    read = settings_of(
        tmp_path,
        LDAP_SERVER_URI="ldaps://dc1.corp.example:636",
        LDAP_USER_SEARCH_BASE="dc=corp,dc=example",
        LDAP_BIND_PASSWORD_FILE=str(secret),
    )
    assert read["backends"][-1] == "identity.ldap.LDAPBackend"
    assert read["password"] == "s3cret"
    assert (read["filter"], read["disabled"]) == ("(uid=%(user)s)", "(pwdAccountLockedTime=000001010000Z)")


def test_active_directory_group_types_default_to_the_disabled_bit(tmp_path):
    read = settings_of(tmp_path, LDAP_GROUP_TYPE="nestedActiveDirectory")
    assert read["disabled"] == "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    assert settings_of(tmp_path, LDAP_DISABLED_FILTER="")["disabled"] == ""


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"LDAP_SERVER_URI": "dc1.corp.example"}, "must start with ldap:// or ldaps://"),
        ({"LDAP_SERVER_URI": "ldap://dc1"}, "set LDAP_USER_SEARCH_BASE"),
        (
            {"LDAP_SERVER_URI": "ldap://dc1", "LDAP_USER_SEARCH_BASE": "dc=x", "LDAP_USER_FILTER": "(uid=x)"},
            "must contain %(user)s",
        ),
        ({"LDAP_GROUP_TYPE": "AD"}, "LDAP_GROUP_TYPE='AD' must be one of"),
        ({"LDAP_START_TLS": "ja"}, "LDAP_START_TLS='ja' is not a boolean"),
    ],
)
def test_a_mistake_stops_the_process(tmp_path, variables, message):
    result = read_settings(tmp_path, **variables)
    assert result.returncode != 0 and message in result.stderr
