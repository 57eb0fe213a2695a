"""The tests' OpenID Connect provider in its own process, for a whole pytest session.

``oidc_provider`` generates an RSA key, migrates a SQLite database in a temporary folder,
registers the portal (the live server's URL) as a confidential client, starts
``manage.py runserver`` on a free loopback port and waits for its discovery document.
``oidc_portal`` points the portal's OIDC_* settings at it for one test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MANAGE = Path(__file__).resolve().parent / "manage.py"
CLIENT_ID = "backup-portal"
CLIENT_SECRET = "test-client-secret-" + "s" * 24
PASSWORD = "provider-password"
STARTUP_SECONDS = 30


@dataclass
class Provider:
    issuer: str
    key: rsa.RSAPrivateKey
    people_file: Path
    log_file: Path

    def set_person(self, username: str, *, groups=(), amr=("pwd",), active: bool = True, **extra) -> None:
        """Add or change someone at the provider: the next sign-in or token reads it."""
        people = json.loads(self.people_file.read_text())
        people[username] = {
            "password": PASSWORD, "groups": list(groups), "amr": list(amr), "active": active, **extra
        }
        self.people_file.write_text(json.dumps(people))


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    encoding, key_format = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, key_format, serialization.NoEncryption())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], env: dict, log: Path) -> None:
    result = subprocess.run([sys.executable, str(MANAGE), *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        log.write_text(result.stdout + result.stderr)
        pytest.fail(f"The test OIDC provider's `manage.py {args[0]}` failed:\n{result.stdout}{result.stderr}")


@pytest.fixture(scope="session")
def oidc_provider(live_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc-provider")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = folder / "key.pem"
    key_file.write_bytes(_pem(key))
    people_file = folder / "people.json"
    people_file.write_text("{}")
    log_file = folder / "provider.log"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH")
    }
    env.update(
        OIDC_TEST_DB=str(folder / "provider.sqlite3"),
        OIDC_TEST_KEY=str(key_file),
        OIDC_TEST_USERS=str(people_file),
        PYTHONUNBUFFERED="1",
    )
    _run(["migrate", "--no-input", "-v", "0"], env, log_file)
    _run(["seed_client", CLIENT_ID, CLIENT_SECRET, live_server.url], env, log_file)

    port = _free_port()
    issuer = f"http://127.0.0.1:{port}/o"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{port}", "--noreload"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"The test OIDC provider exited ({process.returncode}):\n{log_file.read_text()}")
            try:
                if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"The test OIDC provider published no discovery document within {STARTUP_SECONDS} s:\n"
                    f"{log_file.read_text()}"
                )
            time.sleep(0.2)
        yield Provider(issuer=issuer, key=key, people_file=people_file, log_file=log_file)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def oidc_portal(oidc_provider, settings):
    """The portal signs in with the test provider; its discovery cache starts empty."""
    from identity import oidc

    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Example Corp"
    oidc._discovery.clear()
    oidc_provider.people_file.write_text("{}")
    yield oidc_provider
    oidc._discovery.clear()
