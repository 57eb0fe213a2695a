"""Fixtures for the agent tests: job contexts, real database services, a fake portal.

PostgreSQL (127.0.0.1:5432, user postgres, trust) and MariaDB (127.0.0.1:3306,
root, empty password) must be running: a missing service fails the test with
a clear message, it never skips it.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backup_agent.context import JobContext

from .fakeportal import FakePortal

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root"}
PSQL = [
    "psql",
    "-X",
    "-q",
    "-A",
    "-t",
    "-v",
    "ON_ERROR_STOP=1",
    "-h",
    "127.0.0.1",
    "-p",
    "5432",
    "-U",
    "postgres",
]
MYSQL = ["mysql", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B"]


@pytest.fixture
def ctx() -> JobContext:
    return JobContext(job_id=42, client="test-client", tool_timeout=120)


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "protection"
    root.mkdir()
    return root


def _run(argv: list[str], sql: str, service: str) -> str:
    try:
        done = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        pytest.fail(f"{argv[0]} is not installed; the {service} tests need the real client tools")
    if done.returncode != 0:
        pytest.fail(f"{service} at 127.0.0.1 is not usable ({' '.join(argv[:1])}): {done.stderr.strip()}")
    return done.stdout.strip()


def psql(sql: str, database: str = "postgres") -> str:
    return _run([*PSQL, "-d", database], sql, "PostgreSQL")


def mysql(sql: str, database: str | None = None) -> str:
    return _run([*MYSQL, *([database] if database else [])], sql, "MariaDB")


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """A factory of scratch PostgreSQL database names, all dropped afterwards."""
    psql("SELECT 1;")  # fail here, clearly, when PostgreSQL is down
    names: list[str] = []

    def new_name() -> str:
        names.append(f"bp_agent_test_{secrets.token_hex(5)}")
        return names[-1]

    yield new_name
    for name in names:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')


@pytest.fixture
def maria_database() -> Iterator[Callable[[], str]]:
    """A factory of scratch MariaDB database names, all dropped afterwards."""
    mysql("SELECT 1;")
    names: list[str] = []

    def new_name() -> str:
        names.append(f"bp_agent_test_{secrets.token_hex(5)}")
        return names[-1]

    yield new_name
    for name in names:
        mysql(f"DROP DATABASE IF EXISTS `{name}`;")


@pytest.fixture
def portal() -> Iterator[FakePortal]:
    server = FakePortal().start()
    yield server
    server.stop()
