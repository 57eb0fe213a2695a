"""The database plugins' recovery-point index: the dump's table of contents, against the real servers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_agent.context import JobContext
from backup_agent.file_index import IndexWriter
from backup_agent.plugins import mysql as mysql_plugin
from backup_agent.plugins import postgresql
from catalog.file_index import FileIndex

from .conftest import MARIADB, PG, mysql, psql

PG_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers(id), amount numeric);
CREATE TABLE empty_table (id int);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
CREATE MATERIALIZED VIEW order_totals AS SELECT customer, sum(amount) AS total FROM orders GROUP BY customer;
CREATE SCHEMA sales;
CREATE TABLE sales."Order Items" (id int, note text);
CREATE EXTENSION IF NOT EXISTS pg_buffercache;  -- its view belongs to the extension: not in the dump
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 250) g;
INSERT INTO orders SELECT g, 1 + g % 250, g FROM generate_series(1, 1000) g;
INSERT INTO sales."Order Items" VALUES (1, 'a'), (2, 'b'), (3, 'c');
REFRESH MATERIALIZED VIEW order_totals;
"""

MARIA_SCHEMA = """
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL) ENGINE=InnoDB;
CREATE TABLE `odd ``name` (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB;
CREATE TABLE empty_table (id INT) ENGINE=InnoDB;
CREATE VIEW customer_names AS SELECT name FROM customers;
INSERT INTO customers (name) SELECT CONCAT('customer ', seq) FROM seq_1_to_250;
INSERT INTO `odd ``name` SELECT seq, 'x' FROM seq_1_to_40;
"""


def _backup(plugin: Any, options: dict, tmp_path: Path, kind: str) -> tuple[dict, FileIndex]:
    """Back up through the plugin with an index; the facts and the index as the portal reads it."""
    with open(tmp_path / "index.bpi", "wb") as out, open(tmp_path / "dump", "wb") as sink:
        ctx = JobContext(job_id=1, client="test-client", tool_timeout=120)
        ctx.index = IndexWriter(out, kind)
        facts = plugin.backup(options, sink, ctx)
        ctx.index.close()
    return facts, FileIndex(tmp_path / "index.bpi")


def by_path(index: FileIndex) -> dict[str, Any]:
    assert index.objects is not None
    return {obj.path: obj for obj in index.objects}


@pytest.fixture
def pg_source(pg_database: Callable[[], str]) -> str:
    name = pg_database()
    psql(f'CREATE DATABASE "{name}";')
    psql(PG_SCHEMA, name)
    return name


def test_postgresql_index_lists_what_the_dump_holds(pg_source: str, tmp_path: Path):
    facts, index = _backup(postgresql, {"database": pg_source, **PG}, tmp_path, "postgresql")

    assert index.kind == "postgresql" and index.meta["database"] == pg_source
    objects = by_path(index)
    assert {path: (o.type, o.rows) for path, o in objects.items()} == {
        "/public/big_orders": ("view", 0),
        "/public/customers": ("table", 250),
        "/public/customers_id_seq": ("sequence", 0),
        "/public/empty_table": ("table", 0),
        "/public/order_totals": ("materialized view", 0),
        "/public/orders": ("table", 1000),
        "/sales/Order Items": ("table", 3),
    }
    for path in ("/public/customers", "/public/orders", "/sales/Order Items", "/public/order_totals"):
        assert objects[path].size > 0, path
    assert objects["/public/big_orders"].size == 0 and objects["/public/customers_id_seq"].size == 0
    # The raw meta keeps schema and name apart, as the portal's reader expects.
    last = {k: v for k, v in index.meta["objects"][-1].items() if k != "bytes"}
    assert last == {"schema": "sales", "name": "Order Items", "type": "table", "rows": 3}
    # The facts are what they were without an index.
    assert facts["row_counts"] == {
        "public.customers": 250,
        "public.empty_table": 0,
        "public.orders": 1000,
        "sales.Order Items": 3,
    }
    assert [e.name for e in index.listdir(b"")[1]] == ["public", "sales"]
    assert index.entry_at(b"sales/Order Items").rows == 3


def test_postgresql_backup_without_an_index_runs_no_index_query(pg_source: str, tmp_path: Path):
    ctx = JobContext(job_id=1, client="test-client", tool_timeout=120)
    with open(tmp_path / "dump", "wb") as sink:
        facts = postgresql.backup({"database": pg_source, **PG}, sink, ctx)
    assert facts["row_counts"]["public.orders"] == 1000
    assert (tmp_path / "dump").read_bytes()[:5] == b"PGDMP"


@pytest.fixture
def maria_source(maria_database: Callable[[], str]) -> str:
    name = maria_database()
    mysql(f"CREATE DATABASE `{name}`;")
    mysql(MARIA_SCHEMA, name)
    return name


def test_mysql_index_lists_tables_and_views(maria_source: str, tmp_path: Path):
    facts, index = _backup(mysql_plugin, {"database": maria_source, **MARIADB}, tmp_path, "mysql")

    assert index.kind == "mysql" and index.meta["database"] == maria_source
    objects = by_path(index)
    assert {path: (o.type, o.rows) for path, o in objects.items()} == {
        "/customer_names": ("view", 0),
        "/customers": ("table", 250),
        "/empty_table": ("table", 0),
        "/odd `name": ("table", 40),
    }
    assert objects["/customers"].size > 0 and objects["/odd `name"].size > 0
    assert objects["/customer_names"].size == 0
    assert all("schema" not in obj for obj in index.meta["objects"])
    assert facts["row_counts"] == {"customers": 250, "empty_table": 0, "odd `name": 40}
