"""The `mysql` plugin (MySQL and MariaDB): mysqldump of one database, restored into a named one.

Options: {"database": "shop", "host"?: "db01", "port"?: 3306, "user"?: "backup"}.
The password is never an option: put MYSQL_PWD in the agent config's
plugin_env.mysql (it reaches the client through its environment, never argv),
or use the agent user's ~/.my.cnf.

The dump names no database (no CREATE DATABASE, no USE), so it restores into
whatever database the restore names. Row counts are exact per table but taken
in their own consistent snapshot just before the dump, not in the dump's: on a
busy database they may differ slightly, so restore tests report such
differences without failing (`row_counts_exact: false`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import TargetNotEmpty, ToolNotFound
from backup_agent.plugins._db import (
    Drop,
    check_name,
    dropped_on_failure,
    scratch_database,
    validate_connection,
)
from backup_agent.plugins.base import Facts, compare_counts
from backup_agent.process import find_program, run_tool

NAME = "mysql"
DATA_NAME = "data.sql"
QUERY_TIMEOUT = 600.0
# MariaDB ships the same clients under both names; newer ones warn about the old.
_DUMPERS = ("mariadb-dump", "mysqldump")
_CLIENTS = ("mariadb", "mysql")


def available(env: Mapping[str, str]) -> bool:
    return _first(_DUMPERS, env) is not None and _first(_CLIENTS, env) is not None


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    return validate_connection(options, NAME)


def _first(names: tuple[str, ...], env: Mapping[str, str]) -> str | None:
    return next((n for n in names if find_program(n, env)), None)


def _program(names: tuple[str, ...], ctx: JobContext) -> str:
    found = _first(names, ctx.env)
    if found is None:
        raise ToolNotFound(" or ".join(names))
    return found


def _connection(opts: Mapping[str, Any]) -> list[str]:
    argv = []
    if "host" in opts:
        argv.append(f"--host={opts['host']}")
    if "port" in opts:
        argv.append(f"--port={opts['port']}")
    if "user" in opts:
        argv.append(f"--user={opts['user']}")
    return [*argv, "--default-character-set=utf8mb4"]


def _query(
    sql: str, opts: Mapping[str, Any], ctx: JobContext, database: str | None = None
) -> list[list[str]]:
    """Run SQL given on stdin; rows of tab-separated columns (-N -B)."""
    argv = [_program(_CLIENTS, ctx), *_connection(opts), "-N", "-B"]
    if database:
        argv.append(database)
    out = run_tool(argv, ctx, stdin=io.BytesIO(sql.encode()), capture=True, timeout=QUERY_TIMEOUT)
    return [line.split("\t") for line in out.decode("utf-8").splitlines() if line]


def row_counts(opts: Mapping[str, Any], ctx: JobContext, database: str) -> dict[str, int]:
    # Table names come back hex-encoded so that any character survives -B output.
    tables = [
        bytes.fromhex(row[0]).decode("utf-8")
        for row in _query(
            "SELECT HEX(table_name) FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name;",
            opts,
            ctx,
            database,
        )
    ]
    if not tables:
        return {}
    # Exact counts (information_schema.table_rows is an estimate on InnoDB),
    # all in one statement and one snapshot.
    # Identifiers are backtick-quoted with backticks doubled, MySQL's own escaping.
    selects = [
        f"SELECT {i}, COUNT(*) FROM `{name.replace('`', '``')}`"  # noqa: S608
        for i, name in enumerate(tables)
    ]
    sql = "START TRANSACTION WITH CONSISTENT SNAPSHOT; " + " UNION ALL ".join(selects) + "; COMMIT;"
    return {tables[int(i)]: int(n) for i, n in _query(sql, opts, ctx, database)}


# --- backup -------------------------------------------------------------------


def backup(options: Mapping[str, Any], sink: Sink, ctx: JobContext) -> Facts:
    opts = validate(options)
    db = opts["database"]
    counts = row_counts(opts, ctx, db)
    argv = [
        _program(_DUMPERS, ctx),
        *_connection(opts),
        "--single-transaction",  # consistent InnoDB snapshot without locking writers
        "--routines",
        "--triggers",
        "--hex-blob",  # binary columns as hex: the dump stays plain text
        "--no-tablespaces",  # would need the PROCESS privilege, and restores elsewhere
        db,  # one database, without --databases: no CREATE DATABASE / USE in the dump
    ]
    run_tool(argv, ctx, stdout=sink)
    return {"database": db, "row_counts": counts, "row_counts_exact": False}


# --- restore ------------------------------------------------------------------


def restore(
    options: Mapping[str, Any], source: Source, target: str, overwrite: bool, ctx: JobContext
) -> Facts:
    """Load the dump into database `target`.

    A missing target is created (and dropped again if the load fails). An
    existing one must hold no tables unless `overwrite`; the dump's own
    DROP TABLE IF EXISTS then replaces the tables it contains. Unlike
    PostgreSQL, a failed load into an existing database is not rolled back.
    """
    opts = validate(options)
    target = check_name(target, "mysql: restore target database")
    # `target` matched the strict NAME pattern: it cannot close the quotes.
    ((schemas, tables),) = _query(
        f"SELECT (SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{target}'),"  # noqa: S608
        f" (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{target}');",
        opts,
        ctx,
    )
    exists = schemas != "0"
    if exists and tables != "0" and not overwrite:
        raise TargetNotEmpty(f"database {target}")
    if not exists:
        _query(f"CREATE DATABASE `{target}`;", opts, ctx)
    with dropped_on_failure(_dropper(opts, ctx), target, ctx, created=not exists):
        run_tool([_program(_CLIENTS, ctx), *_connection(opts), target], ctx, stdin=source)
    return {"database": target, "row_counts": row_counts(opts, ctx, target), "row_counts_exact": False}


def _dropper(opts: Mapping[str, Any], ctx: JobContext) -> Drop:
    def drop(database: str) -> None:
        # Only names that matched the strict NAME pattern get here: nothing to escape.
        _query(f"DROP DATABASE IF EXISTS `{check_name(database, 'mysql: database')}`;", opts, ctx)

    return drop


# --- restore test -------------------------------------------------------------


def scratch_target(options: Mapping[str, Any], ctx: JobContext) -> AbstractContextManager[str]:
    return scratch_database(_dropper(validate(options), ctx), ctx)


def compare(expected: Facts, actual: Facts) -> list[str]:
    want, got = expected.get("row_counts", {}), actual.get("row_counts", {})
    if expected.get("row_counts_exact"):
        return compare_counts(want, got, "table")
    # Counts were not taken in the dump's snapshot, so on a busy server they
    # may legitimately differ; a table that did not come back is still wrong.
    return compare_counts(dict.fromkeys(want, True), dict.fromkeys(got, True), "table present")
