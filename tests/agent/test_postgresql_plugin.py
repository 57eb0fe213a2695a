"""The postgresql plugin against the real server on 127.0.0.1:5432."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from backup_agent.errors import InvalidOptions
from backup_agent.plugins import postgresql

from .conftest import PG, psql
from .helpers import backup_job, backup_ref, execute, other_job, restore_job, succeeded, tool

SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text);
CREATE SCHEMA sales;
CREATE TABLE sales."Order Items" (id int PRIMARY KEY, customer int REFERENCES customers(id), blob bytea);
CREATE TABLE empty_table (id int);
INSERT INTO customers (name, note)
  SELECT 'customer ' || g, E'line1\\nline2 ''quoted''' FROM generate_series(1, 250) g;
INSERT INTO sales."Order Items"
  SELECT g, 1 + g % 250, decode(md5(g::text), 'hex') FROM generate_series(1, 1000) g;
"""
EXPECTED_COUNTS = {"public.customers": 250, "public.empty_table": 0, "sales.Order Items": 1000}


def contents(database: str) -> str:
    return psql(
        "SELECT string_agg(c::text, '|' ORDER BY id) FROM customers c;"
        " SELECT string_agg(o::text, '|' ORDER BY id) FROM sales.\"Order Items\" o;",
        database,
    )


@pytest.fixture
def source_db(pg_database: Callable[[], str]) -> str:
    name = pg_database()
    psql(f'CREATE DATABASE "{name}";')
    psql(SCHEMA, name)
    return name


def options(database: str) -> dict:
    return {"database": database, **PG}


def test_backup_and_restore_into_a_new_database(source_db: str, pg_database, storage_root: Path):
    report = succeeded(execute(backup_job("postgresql", options(source_db), storage_root)))
    target = pg_database()

    restored = succeeded(
        execute(restore_job("postgresql", options(source_db), storage_root, backup_ref(report), target))
    )

    facts = report["manifest"]["facts"]
    assert facts["row_counts"] == EXPECTED_COUNTS and facts["row_counts_exact"] is True
    assert restored["manifest"]["facts"]["row_counts"] == EXPECTED_COUNTS
    assert contents(target) == contents(source_db)
    assert (storage_root / report["location"] / "data.dump").read_bytes()[:5] == b"PGDMP"


def test_restore_refuses_a_non_empty_database_unless_overwrite(
    source_db: str, pg_database, storage_root: Path
):
    report = succeeded(execute(backup_job("postgresql", options(source_db), storage_root, "gzip")))
    target = pg_database()
    psql(f'CREATE DATABASE "{target}";')
    psql("CREATE TABLE customers (id int); INSERT INTO customers VALUES (1);", target)

    refused = execute(restore_job("postgresql", options(source_db), storage_root, backup_ref(report), target))
    assert refused["status"] == "failed" and "target not empty" in refused["error"]
    assert refused["error_class"] == "invalid_job"
    assert psql("SELECT count(*) FROM customers;", target) == "1"

    succeeded(
        execute(
            restore_job(
                "postgresql", options(source_db), storage_root, backup_ref(report), target, overwrite=True
            )
        )
    )
    assert contents(target) == contents(source_db)


def test_failed_restore_into_a_new_database_leaves_no_database(
    source_db: str, pg_database, storage_root: Path
):
    report = succeeded(
        execute(backup_job("command", {"backup_argv": [tool("echo"), "not a dump"]}, storage_root))
    )
    target = pg_database()

    result = execute(restore_job("postgresql", options(source_db), storage_root, backup_ref(report), target))

    assert result["status"] == "failed" and "pg_restore failed" in result["error"]
    assert psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}';") == "0"  # noqa: S608


def scratch_databases(job: dict) -> str:
    """The restore-test databases of that job still on the server (one per line)."""
    return psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE 'backup\\_agent\\_test\\_{job['id']}\\_%';"  # noqa: S608
    )


def test_restore_test_compares_exact_row_counts(source_db: str, storage_root: Path):
    report = succeeded(execute(backup_job("postgresql", options(source_db), storage_root)))
    job = other_job("restore_test", "postgresql", options(source_db), storage_root, backup_ref(report))

    result = succeeded(execute(job))

    assert result["manifest"]["facts"]["row_counts"] == EXPECTED_COUNTS
    assert scratch_databases(job) == ""  # scratch database dropped
    assert "could not drop" not in result["log_tail"]


def test_restore_test_fails_when_counts_differ(source_db: str, storage_root: Path):
    report = succeeded(execute(backup_job("postgresql", options(source_db), storage_root)))
    backup = backup_ref(report)
    backup["manifest"]["facts"]["row_counts"]["public.customers"] = 251

    job = other_job("restore_test", "postgresql", options(source_db), storage_root, backup)

    result = execute(job)

    assert result["status"] == "failed" and result["error_class"] == "unknown"
    assert "restore test mismatch: table public.customers: expected 251, restored 250" in result["error"]
    assert scratch_databases(job) == ""  # dropped although the test failed


def test_failed_restore_test_drops_its_scratch_database(source_db: str, storage_root: Path):
    report = succeeded(
        execute(backup_job("command", {"backup_argv": [tool("echo"), "not a dump"]}, storage_root))
    )
    job = other_job("restore_test", "postgresql", options(source_db), storage_root, backup_ref(report))

    result = execute(job)

    assert result["status"] == "failed" and "pg_restore failed" in result["error"]
    assert scratch_databases(job) == ""
    assert "could not drop" not in result["log_tail"]


def test_unreachable_server_is_reported_as_connection_refused(storage_root: Path):
    report = execute(
        backup_job("postgresql", {"database": "postgres", "host": "127.0.0.1", "port": 1}, storage_root)
    )
    assert report["status"] == "failed"
    assert "connection refused" in report["error"].lower()
    assert report["error_class"] == "database_unreachable"


def test_missing_database_is_database_unreachable(storage_root: Path):
    report = execute(backup_job("postgresql", {"database": "bp_agent_no_such_db", **PG}, storage_root))
    assert report["status"] == "failed" and report["error_class"] == "database_unreachable"
    assert 'database "bp_agent_no_such_db" does not exist' in report["error"]


@pytest.mark.parametrize(
    "bad",
    [
        {"database": "x; DROP TABLE y"},
        {"database": "-h evil"},
        {"database": "host=evil"},
        {"database": "a b"},
        {"database": "ok", "port": "5432x"},
        {"database": "ok", "host": "a b"},
        {"database": "ok", "password": "x"},
        {"database": "ok", "user": "x'y"},
        {},
    ],
)
def test_options_are_validated(bad):
    with pytest.raises(InvalidOptions):
        postgresql.validate(bad)
