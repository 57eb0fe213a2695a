"""Restoring single tables from a database backup (ctx.selection), against the real servers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_agent.context import JobContext
from backup_agent.errors import InvalidOptions, TargetNotEmpty
from backup_agent.plugins import mysql as mysql_plugin
from backup_agent.plugins import postgresql

from .conftest import MARIADB, PG, mysql, psql


def job_context(selection: tuple[bytes, ...] | None = None) -> JobContext:
    ctx = JobContext(job_id=7, client="test-client", tool_timeout=120)
    ctx.selection = selection
    return ctx


def dump(plugin: Any, options: dict, tmp_path: Path) -> Path:
    path = tmp_path / "dump"
    with open(path, "wb") as sink:
        plugin.backup(options, sink, job_context())
    return path


def restore(
    plugin: Any, options: dict, path: Path, target: str, *items: bytes, overwrite: bool = False
) -> dict:
    with open(path, "rb") as source:
        return plugin.restore(options, source, target, overwrite, job_context(items))


# --- PostgreSQL -----------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL CHECK (name <> ''));
CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers(id), amount numeric DEFAULT 0);
CREATE INDEX orders_amount ON orders (amount);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
CREATE SCHEMA sales;
CREATE TABLE sales."Order Items" (id int, note text);
CREATE TABLE sales."-t" (id int);
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 250) g;
INSERT INTO orders SELECT g, 1 + g % 250, g FROM generate_series(1, 1000) g;
INSERT INTO sales."Order Items" VALUES (1, 'a'), (2, 'b'), (3, 'c');
INSERT INTO sales."-t" VALUES (1);
"""
PG_RELATIONS = (
    "SELECT string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text, ','"
    " ORDER BY n.nspname, c.relname)"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname <> 'information_schema' AND n.nspname !~ '^pg_';"
)


def pg_exists(name: str) -> bool:
    return psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}';") == "1"  # noqa: S608


@pytest.fixture
def pg(pg_database: Callable[[], str], tmp_path: Path) -> tuple[dict, Path]:
    name = pg_database()
    psql(f'CREATE DATABASE "{name}";')
    psql(PG_SCHEMA, name)
    options = {"database": name, **PG}
    return options, dump(postgresql, options, tmp_path)


def test_postgresql_restores_one_table_into_a_new_database(pg, pg_database):
    options, path = pg
    target = pg_database()

    facts = restore(postgresql, options, path, target, b"public/orders")

    assert facts["row_counts"] == {"public.orders": 1000} and facts["database"] == target
    # The table and its rows only: pg_restore -t brings neither its primary key
    # nor its other indexes, nor the foreign key to customers (module docstring).
    assert psql(PG_RELATIONS, target) == "public.orders:r"
    assert psql("SELECT count(*), sum(amount) FROM orders;", target) == "1000|500500"
    assert psql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass;", target) == "0"
    # ... but the column default, written inline by pg_dump, comes along.
    assert psql("INSERT INTO orders (id) VALUES (0) RETURNING amount;", target) == "0"


def test_postgresql_restores_tables_of_another_schema_creating_it(pg, pg_database):
    options, path = pg
    target = pg_database()

    facts = restore(postgresql, options, path, target, b"sales/Order Items", b"sales/-t")

    assert facts["row_counts"] == {"sales.Order Items": 3, "sales.-t": 1}
    assert psql(PG_RELATIONS, target) == "sales.-t:r,sales.Order Items:r"
    assert psql("SELECT string_agg(note, '' ORDER BY id) FROM sales.\"Order Items\";", target) == "abc"


def test_postgresql_refuses_tables_from_two_schemas(pg, pg_database):
    options, path = pg
    target = pg_database()

    with pytest.raises(InvalidOptions, match="one schema per restore"):
        restore(postgresql, options, path, target, b"public/orders", b"sales/Order Items")
    assert not pg_exists(target)


@pytest.mark.parametrize("item", [b"orders", b"public/a/b", b"/orders", b"public/", b"\xff/x"])
def test_postgresql_refuses_a_malformed_selection(pg, pg_database, item):
    options, path = pg
    target = pg_database()

    with pytest.raises(InvalidOptions):
        restore(postgresql, options, path, target, item)
    assert not pg_exists(target)


def test_postgresql_refuses_a_missing_table_and_drops_the_target_it_created(pg, pg_database):
    options, path = pg
    target = pg_database()

    with pytest.raises(InvalidOptions, match="nope"):
        restore(postgresql, options, path, target, b"public/orders", b"public/nope")
    assert not pg_exists(target)


def test_postgresql_existing_target_holding_the_table_needs_overwrite(pg, pg_database):
    options, path = pg
    target = pg_database()
    psql(f'CREATE DATABASE "{target}";')
    psql("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1); CREATE TABLE keep (id int);", target)

    with pytest.raises(TargetNotEmpty):
        restore(postgresql, options, path, target, b"public/orders")
    assert psql("SELECT count(*) FROM orders;", target) == "1"

    facts = restore(postgresql, options, path, target, b"public/orders", overwrite=True)

    assert facts["row_counts"] == {"public.orders": 1000}
    assert psql("SELECT count(*) FROM orders;", target) == "1000"
    assert psql(PG_RELATIONS, target) == "public.keep:r,public.orders:r"  # the rest untouched


def test_postgresql_existing_target_without_the_tables_is_fine(pg, pg_database):
    options, path = pg
    target = pg_database()
    psql(f'CREATE DATABASE "{target}";')
    psql("CREATE TABLE orders (id int);", target)  # in public: not in the way of sales."Order Items"

    restore(postgresql, options, path, target, b"sales/Order Items")

    assert psql(PG_RELATIONS, target) == "public.orders:r,sales.Order Items:r"


# --- MySQL / MariaDB ------------------------------------------------------------------

MARIA_SCHEMA = """
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL) ENGINE=InnoDB;
CREATE TABLE `odd ``name` (id INT PRIMARY KEY, customer INT, note LONGTEXT,
  FOREIGN KEY (customer) REFERENCES customers(id)) ENGINE=InnoDB;
CREATE TABLE audit (msg VARCHAR(100)) ENGINE=InnoDB;
CREATE VIEW customer_names AS SELECT name FROM customers;
CREATE PROCEDURE hello() SELECT 'hello';
CREATE TRIGGER customers_audit AFTER INSERT ON customers FOR EACH ROW INSERT INTO audit VALUES (NEW.name);
INSERT INTO customers (name) SELECT CONCAT('customer ', seq) FROM seq_1_to_250;
INSERT INTO `odd ``name` SELECT seq, seq, CONCAT('note ', seq) FROM seq_1_to_40;
INSERT INTO `odd ``name` VALUES (41, 1, REPEAT('x', 3000000));
"""


def maria_exists(name: str) -> bool:
    return mysql(f"SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{name}';") == "1"  # noqa: S608


def maria_objects(database: str) -> str:
    return mysql(
        "SELECT GROUP_CONCAT(CONCAT(table_name, ':', table_type) ORDER BY table_name SEPARATOR ',')"  # noqa: S608
        f" FROM information_schema.tables WHERE table_schema = '{database}';"
    )


@pytest.fixture
def maria(maria_database: Callable[[], str], tmp_path: Path) -> tuple[dict, Path]:
    name = maria_database()
    mysql(f"CREATE DATABASE `{name}`;")
    mysql(MARIA_SCHEMA, name)
    options = {"database": name, **MARIADB}
    return options, dump(mysql_plugin, options, tmp_path)


def test_mysql_restores_one_table_with_an_odd_name_and_long_lines(maria, maria_database):
    options, path = maria
    target = maria_database()

    facts = restore(mysql_plugin, options, path, target, b"odd `name")

    assert facts["row_counts"] == {"odd `name": 41} and facts["database"] == target
    assert maria_objects(target) == "odd `name:BASE TABLE"
    assert mysql("SELECT COUNT(*), SUM(LENGTH(note)) FROM `odd ``name`;", target) == f"41\t{3000000 + 271}"


def test_mysql_keeps_the_triggers_of_a_chosen_table_and_drops_views_and_routines(maria, maria_database):
    options, path = maria
    target = maria_database()

    facts = restore(mysql_plugin, options, path, target, b"customers", b"audit")

    assert facts["row_counts"] == {"customers": 250, "audit": 250}
    assert maria_objects(target) == "audit:BASE TABLE,customers:BASE TABLE"
    routines = f"SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = '{target}';"  # noqa: S608
    assert mysql(routines) == "0"
    mysql("INSERT INTO customers (name) VALUES ('new');", target)
    assert mysql("SELECT COUNT(*) FROM audit WHERE msg = 'new';", target) == "1"  # the trigger came along


def test_mysql_refuses_a_missing_table_and_drops_the_target_it_created(maria, maria_database):
    options, path = maria
    target = maria_database()

    with pytest.raises(InvalidOptions, match="nope"):
        restore(mysql_plugin, options, path, target, b"customers", b"nope")
    assert not maria_exists(target)


def test_mysql_existing_target_holding_the_table_needs_overwrite(maria, maria_database):
    options, path = maria
    target = maria_database()
    mysql(f"CREATE DATABASE `{target}`;")
    mysql("CREATE TABLE customers (id INT); INSERT INTO customers VALUES (1);", target)
    mysql("CREATE TABLE keep (id INT);", target)

    with pytest.raises(TargetNotEmpty):
        restore(mysql_plugin, options, path, target, b"customers")
    assert mysql("SELECT COUNT(*) FROM customers;", target) == "1"

    facts = restore(mysql_plugin, options, path, target, b"customers", overwrite=True)

    assert facts["row_counts"] == {"customers": 250}
    assert maria_objects(target) == "customers:BASE TABLE,keep:BASE TABLE"


def test_mysql_existing_target_without_the_tables_is_fine(maria, maria_database):
    options, path = maria
    target = maria_database()
    mysql(f"CREATE DATABASE `{target}`;")
    mysql("CREATE TABLE keep (id INT);", target)

    restore(mysql_plugin, options, path, target, b"odd `name")

    assert maria_objects(target) == "keep:BASE TABLE,odd `name:BASE TABLE"


def test_mysql_dump_filter_is_the_same_whatever_the_chunk_size(maria, monkeypatch):
    _, path = maria
    data = path.read_bytes()

    def filtered(chunk: int, read: int) -> bytes:
        monkeypatch.setattr(mysql_plugin, "CHUNK", chunk)
        stream = mysql_plugin.DumpFilter(io.BytesIO(data), ["customers"])
        out = bytearray()
        while piece := stream.read(read):
            assert len(piece) <= read
            out += piece
        return bytes(out)

    whole = filtered(1 << 20, 1 << 20)
    assert b"CREATE TABLE `customers`" in whole and b"TRIGGER" in whole
    assert b"`odd ``name`" not in whole and b"customer_names" not in whole and b"hello" not in whole
    assert whole.startswith(data[:200])  # the header
    for chunk, read in ((1, 7), (5, 1 << 16), (4097, 3)):
        assert filtered(chunk, read) == whole
