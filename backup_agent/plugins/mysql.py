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

Index: when the job keeps one (ctx.index), the backup also lists the
database's tables and views from information_schema, with the exact row
counts above and data_length + index_length as their bytes (InnoDB's own
estimate of its pages, taken just before the dump like the counts).

Selective restore (ctx.selection, items b"table"): the dump is filtered as it
streams into the client. It keeps the header (the SET statements before the
first section) and the sections of the chosen tables: "Table structure for
table `t`" (DROP TABLE IF EXISTS, CREATE TABLE with its indexes and keys) and
"Dumping data for table `t`" (the rows, then the table's triggers). Every
other section is dropped: other tables, views, routines and events. Foreign
keys to tables left out are created all the same (the header turns
FOREIGN_KEY_CHECKS off). Choosing a view by name keeps its two view
sections, which need the tables it reads to exist in the target.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import InvalidOptions, TargetNotEmpty, ToolNotFound
from backup_agent.plugins._db import (
    Drop,
    check_name,
    dropped_on_failure,
    scratch_database,
    selected_names,
    validate_connection,
)
from backup_agent.plugins.base import Facts, compare_counts
from backup_agent.process import CHUNK, find_program, run_tool

NAME = "mysql"
DATA_NAME = "data.sql"
INDEXED = True
INCREMENTAL = False  # every backup is a full
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


def index_objects(opts: Mapping[str, Any], ctx: JobContext, database: str, counts: Mapping[str, int]) -> list:
    """The dump's table of contents for the recovery point's index (no schema: one database)."""
    objects = []
    for name_hex, kind, size in _query(
        "SELECT HEX(table_name), table_type, COALESCE(data_length, 0) + COALESCE(index_length, 0)"
        " FROM information_schema.tables WHERE table_schema = DATABASE()"
        " AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED', 'VIEW', 'SEQUENCE') ORDER BY table_name;",
        opts,
        ctx,
        database,
    ):
        name = bytes.fromhex(name_hex).decode("utf-8")
        word = {"VIEW": "view", "SEQUENCE": "sequence"}.get(kind, "table")
        rows = counts.get(name, 0) if word == "table" else 0
        objects.append({"name": name, "type": word, "rows": rows, "bytes": int(size)})
    return objects


# --- backup -------------------------------------------------------------------


def backup(options: Mapping[str, Any], sink: Sink, ctx: JobContext) -> Facts:
    opts = validate(options)
    db = opts["database"]
    counts = row_counts(opts, ctx, db)
    if ctx.index is not None:
        ctx.index.meta.update({"database": db, "objects": index_objects(opts, ctx, db, counts)})
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

    With ctx.selection only the chosen tables are loaded (see the module's
    docstring): an existing target is then fine as long as none of them exists
    there, and the facts count only them. A chosen table the dump does not hold
    fails the restore with InvalidOptions, which is only known at the dump's
    end: a target created here is dropped, an existing one keeps the other
    chosen tables already loaded.
    """
    opts = validate(options)
    target = check_name(target, "mysql: restore target database")
    chosen = selected_names(ctx.selection, NAME) if ctx.selection is not None else None
    in_the_way = ""
    if chosen is not None:
        # Hex on both sides: any character in a name, compared byte for byte.
        hexes = ", ".join(f"'{t.encode().hex().upper()}'" for t in chosen)
        in_the_way = f" AND HEX(table_name) IN ({hexes})"
    # `target` matched the strict NAME pattern: it cannot close the quotes.
    ((schemas, tables),) = _query(
        f"SELECT (SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{target}'),"  # noqa: S608
        f" (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{target}'{in_the_way});",
        opts,
        ctx,
    )
    exists = schemas != "0"
    if exists and tables != "0" and not overwrite:
        raise TargetNotEmpty(f"database {target}")
    if not exists:
        _query(f"CREATE DATABASE `{target}`;", opts, ctx)
    with dropped_on_failure(_dropper(opts, ctx), target, ctx, created=not exists):
        stream: Source = source if chosen is None else DumpFilter(source, chosen)
        run_tool([_program(_CLIENTS, ctx), *_connection(opts), target], ctx, stdin=stream)
    counts = row_counts(opts, ctx, target)
    if chosen is not None:
        counts = {name: n for name, n in counts.items() if name in chosen}
    return {"database": target, "row_counts": counts, "row_counts_exact": False}


# A section of the dump starts with a comment framed by "--" lines:
#   --
#   -- Table structure for table `a``b`
#   --
# with the name in backticks, backticks inside it doubled (mysqldump and mariadb-dump alike).
_SECTION = b"\n--\n-- "
_HEADING = re.compile(
    rb"-- (?:(?:Table structure for table|Dumping data for table"
    rb"|Temporary (?:table|view) structure for view|Final view structure for view) `((?:[^`]|``)+)`"
    rb"|Dumping (?:routines|events) for database .*)"
)
_HEADING_MAX = 4096  # a heading is short (a name is at most 64 characters); longer lines are data


class DumpFilter:
    """A dump read through `read()` with only the sections of the chosen tables (and its header).

    Memory stays bounded whatever the line lengths: the dump is scanned chunk by
    chunk for the section headings, and only a heading line is ever held whole.
    Raises InvalidOptions at the end of the dump if a chosen table was not in it.
    """

    def __init__(self, source: Source, tables: list[str]) -> None:
        self._source = source
        self._chosen = {t.encode("utf-8"): t for t in tables}
        self.found: set[str] = set()
        self._chunks = self._filter()
        self._rest = b""

    def read(self, n: int = -1) -> bytes:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._rest = chunk
        if n is None or n < 0:
            n = len(self._rest)
        out, self._rest = self._rest[:n], self._rest[n:]
        return out

    def _more(self) -> bytes:
        return self._source.read(CHUNK)

    def _filter(self) -> Iterator[bytes]:
        buf = b""
        keep = True  # the header, up to the first section
        eof = False
        while True:
            at = buf.find(_SECTION)
            if at < 0:
                if eof:
                    if keep and buf:
                        yield buf
                    break
                cut = max(0, len(buf) - len(_SECTION) + 1)  # the tail may be the start of a heading
                if keep and cut:
                    yield buf[:cut]
                buf = buf[cut:]
                data = self._more()
                buf, eof = (buf + data, False) if data else (buf, True)
                continue
            if keep:
                yield buf[: at + 1]
            buf = buf[at + 1 :]  # starts with "--\n-- "
            end = buf.find(b"\n", 3)
            while end < 0 and not eof and len(buf) <= _HEADING_MAX:
                data = self._more()
                if not data:
                    eof = True
                buf += data
                end = buf.find(b"\n", 3)
            match = _HEADING.fullmatch(buf[3:end]) if 0 <= end <= _HEADING_MAX else None
            if match is None:  # a comment, not a section: goes with the current one
                if keep:
                    yield buf[:3]
                buf = buf[3:]
                continue
            name = match.group(1).replace(b"``", b"`") if match.group(1) else None
            keep = name in self._chosen
            if keep:
                self.found.add(self._chosen[name])  # type: ignore[index]
                yield buf[: end + 1]
            buf = buf[end + 1 :]
        missing = [t for t in self._chosen.values() if t not in self.found]
        if missing:
            raise InvalidOptions(f"mysql: table(s) {', '.join(map(repr, missing))} not in this backup")


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
