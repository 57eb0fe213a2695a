"""The mysql plugin against the real MariaDB on 127.0.0.1:3306."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from backup_agent.errors import InvalidOptions
from backup_agent.plugins import mysql as mysql_plugin

from .conftest import MARIADB, mysql
from .helpers import backup_job, backup_ref, execute, other_job, restore_job, succeeded, tool

SCHEMA = """
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, note TEXT)
  ENGINE=InnoDB;
CREATE TABLE `order items` (id INT PRIMARY KEY, customer INT, blob_col VARBINARY(32),
  FOREIGN KEY (customer) REFERENCES customers(id)) ENGINE=InnoDB;
CREATE TABLE empty_table (id INT) ENGINE=InnoDB;
CREATE VIEW customer_names AS SELECT name FROM customers;
CREATE PROCEDURE hello() SELECT 'hello';
INSERT INTO customers (name, note)
  SELECT CONCAT('customer ', seq), 'line1\\nline2 ''quoted''' FROM seq_1_to_250;
INSERT INTO `order items` SELECT seq, 1 + seq % 250, UNHEX(MD5(seq)) FROM seq_1_to_1000;
"""
EXPECTED_COUNTS = {"customers": 250, "empty_table": 0, "order items": 1000}


def contents(database: str) -> str:
    return mysql(
        "SET SESSION group_concat_max_len = 10000000;"
        " SELECT GROUP_CONCAT(CONCAT_WS(',', id, name, note) ORDER BY id SEPARATOR '|') FROM customers;"
        " SELECT GROUP_CONCAT(CONCAT_WS(',', id, customer, HEX(blob_col)) ORDER BY id SEPARATOR '|')"
        " FROM `order items`;",
        database,
    )


@pytest.fixture
def source_db(maria_database: Callable[[], str]) -> str:
    name = maria_database()
    mysql(f"CREATE DATABASE `{name}`;")
    mysql(SCHEMA, name)
    return name


def options(database: str) -> dict:
    return {"database": database, **MARIADB}


def test_backup_and_restore_into_a_new_database(source_db: str, maria_database, storage_root: Path):
    report = succeeded(execute(backup_job("mysql", options(source_db), storage_root)))
    target = maria_database()

    restored = succeeded(
        execute(restore_job("mysql", options(source_db), storage_root, backup_ref(report), target))
    )

    assert report["manifest"]["facts"]["row_counts"] == EXPECTED_COUNTS
    assert restored["manifest"]["facts"]["row_counts"] == EXPECTED_COUNTS
    assert contents(target) == contents(source_db)
    assert mysql("SHOW FULL TABLES WHERE Table_type = 'VIEW';", target) == "customer_names\tVIEW"
    assert "hello" in mysql(f"SHOW PROCEDURE STATUS WHERE Db = '{target}';")
    dump = (storage_root / report["location"] / "data.sql").read_text()
    assert "CREATE DATABASE" not in dump and f"USE `{source_db}`" not in dump


def test_restore_refuses_a_database_with_tables_unless_overwrite(
    source_db: str, maria_database, storage_root: Path
):
    report = succeeded(execute(backup_job("mysql", options(source_db), storage_root, "gzip")))
    target = maria_database()
    mysql(f"CREATE DATABASE `{target}`;")
    mysql("CREATE TABLE customers (id INT); INSERT INTO customers VALUES (1);", target)

    refused = execute(restore_job("mysql", options(source_db), storage_root, backup_ref(report), target))
    assert refused["status"] == "failed" and "target not empty" in refused["error"]
    assert refused["error_class"] == "invalid_job"
    assert mysql("SELECT COUNT(*) FROM customers;", target) == "1"

    succeeded(
        execute(
            restore_job("mysql", options(source_db), storage_root, backup_ref(report), target, overwrite=True)
        )
    )
    assert contents(target) == contents(source_db)


def test_existing_empty_database_is_a_valid_target(source_db: str, maria_database, storage_root: Path):
    report = succeeded(execute(backup_job("mysql", options(source_db), storage_root)))
    target = maria_database()
    mysql(f"CREATE DATABASE `{target}`;")

    succeeded(execute(restore_job("mysql", options(source_db), storage_root, backup_ref(report), target)))

    assert contents(target) == contents(source_db)


def scratch_databases(job: dict) -> str:
    """The restore-test databases of that job still on the server (one per line)."""
    return mysql(f"SHOW DATABASES LIKE 'backup_agent\\_test\\_{job['id']}\\_%';")


def test_restore_test_restores_to_a_scratch_database_and_drops_it(source_db: str, storage_root: Path):
    report = succeeded(execute(backup_job("mysql", options(source_db), storage_root)))
    job = other_job("restore_test", "mysql", options(source_db), storage_root, backup_ref(report))

    result = succeeded(execute(job))

    assert result["manifest"]["facts"]["row_counts"] == EXPECTED_COUNTS
    assert scratch_databases(job) == ""
    assert "could not drop" not in result["log_tail"]


def test_failed_restore_test_drops_its_scratch_database(source_db: str, storage_root: Path):
    report = succeeded(
        execute(backup_job("command", {"backup_argv": [tool("echo"), "THIS IS NOT SQL;"]}, storage_root))
    )
    job = other_job("restore_test", "mysql", options(source_db), storage_root, backup_ref(report))

    result = execute(job)

    assert result["status"] == "failed" and "failed (exit status 1)" in result["error"]
    assert result["error_class"] == "unknown"  # a syntax error in the dump: no class of its own
    assert scratch_databases(job) == ""
    assert "could not drop" not in result["log_tail"]


def test_failed_load_into_a_new_database_leaves_no_database(
    source_db: str, maria_database, storage_root: Path
):
    report = succeeded(
        execute(backup_job("command", {"backup_argv": [tool("echo"), "THIS IS NOT SQL;"]}, storage_root))
    )
    target = maria_database()

    result = execute(restore_job("mysql", options(source_db), storage_root, backup_ref(report), target))

    assert result["status"] == "failed" and "failed (exit status 1)" in result["error"]
    assert mysql(f"SHOW DATABASES LIKE '{target}';") == ""


def test_unreachable_server_is_reported_as_connection_refused(storage_root: Path):
    report = execute(
        backup_job("mysql", {"database": "x", "host": "127.0.0.1", "port": 1, "user": "root"}, storage_root)
    )
    assert report["status"] == "failed" and "connection refused" in report["error"]
    assert report["error_class"] == "database_unreachable"


def test_password_reaches_the_client_through_the_environment_only(source_db: str, storage_root: Path):
    report = execute(
        backup_job("mysql", options(source_db), storage_root), plugin_env={"mysql": {"MYSQL_PWD": "wrong"}}
    )
    # root has no password here, so a wrong one must be refused: proof it was used.
    assert report["status"] == "failed" and "permission denied" in report["error"]
    assert report["error_class"] == "permission_denied"  # the login was refused: fix the credentials


@pytest.mark.parametrize(
    "bad", [{"database": "x`; DROP"}, {"database": "a'b"}, {"database": "ok", "pwd": "x"}]
)
def test_options_are_validated(bad):
    with pytest.raises(InvalidOptions):
        mysql_plugin.validate(bad)
