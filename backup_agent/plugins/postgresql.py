"""The `postgresql` plugin: pg_dump -Fc streamed to storage, pg_restore into a named database.

Options: {"database": "orders", "host"?: "db01", "port"?: 5432, "user"?: "backup"}.
The password is never an option (options are stored by the portal): put
PGPASSWORD in the agent config's plugin_env.postgresql, or use ~/.pgpass.

The manifest's row counts are exact and consistent with the dump: they are
counted inside a REPEATABLE READ transaction whose snapshot pg_dump reuses
(--snapshot), so a busy database still gives counts that a restore test can
compare one for one.

Index: when the job keeps one (ctx.index), the backup also lists what the
dump holds, in the same snapshot: tables, views, materialized views,
sequences and foreign tables of the user schemas, with exact rows for tables
and pg_total_relation_size bytes for tables and materialized views.

Selective restore (ctx.selection, items b"schema/table", all in one schema):
`pg_restore --schema=S --table=T ...` restores what pg_restore -t selects,
which with pg_restore 15 is each table's CREATE TABLE (columns, NOT NULL,
CHECK constraints and plain column defaults, which pg_dump writes inline),
its owner, comment and grants, and its data. It does NOT restore the table's
indexes, primary key, unique, exclusion and foreign-key constraints,
triggers, rules or policies (separate entries in the dump), nor a serial
column's default and sequence (DEFAULT and SEQUENCE entries) or an identity
column's identity: such a column comes back as a plain NOT NULL integer.
Selecting a view, materialized view, sequence or foreign table by name restores it as well.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import InvalidOptions, TargetNotEmpty, ToolFailed
from backup_agent.plugins._db import (
    Drop,
    check_name,
    dropped_on_failure,
    scratch_database,
    selected_names,
    validate_connection,
)
from backup_agent.plugins.base import Facts, compare_counts
from backup_agent.process import Session, find_program, run_tool

NAME = "postgresql"
DATA_NAME = "data.dump"
INDEXED = True
INCREMENTAL = False  # every backup is a full
QUERY_TIMEOUT = 600.0  # metadata queries; the dump itself uses the job's tool_timeout
MAINTENANCE_DB = "postgres"

# One line of JSON: {"schema.table": rows, ...}. query_to_xml runs a count per
# table with identifiers quoted by format('%I'), all inside one statement.
ROW_COUNTS_SQL = (
    "SELECT coalesce(json_object_agg(n.nspname || '.' || c.relname,"
    " (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I',"
    " n.nspname, c.relname), false, true, '')))[1]::text::bigint ORDER BY n.nspname, c.relname), '{}')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_';"
)
# One line of JSON (jsonb: json_agg would put newlines between elements): what
# the dump holds, as the recovery point's index lists it. Extension members are
# left out, as pg_dump leaves them out; rows come from ROW_COUNTS_SQL.
INDEX_SQL = (
    "SELECT coalesce(jsonb_agg(jsonb_build_object('schema', n.nspname, 'name', c.relname,"
    " 'type', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'"
    " WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'table' END,"
    " 'bytes', CASE WHEN c.relkind IN ('r', 'p', 'm') THEN coalesce(pg_total_relation_size(c.oid), 0)"
    " ELSE 0 END) ORDER BY n.nspname, c.relname), '[]')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    " AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
    " AND d.objid = c.oid AND d.deptype = 'e');"
)
_USER_OBJECTS_SQL = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    " AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_';"
)
_PSQL = ["psql", "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]


def available(env: Mapping[str, str]) -> bool:
    return all(find_program(p, env) for p in ("pg_dump", "pg_restore", "psql", "createdb", "dropdb"))


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    return validate_connection(options, NAME)


def _env(opts: Mapping[str, Any], ctx: JobContext) -> dict[str, str]:
    """libpq reads host, port and user from the environment: nothing secret in argv."""
    env = dict(ctx.env)
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    env.setdefault("PGAPPNAME", "backup-agent")
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
        if key in opts:
            env[var] = str(opts[key])
    return env


def _query(sql: str, database: str, env: Mapping[str, str], ctx: JobContext, **variables: str) -> str:
    # SQL goes in on stdin, where psql interpolates variables (:'name') with
    # proper quoting; values never need to be pasted into the statement.
    argv = [*_PSQL, "-d", database]
    for key, value in variables.items():
        argv += ["-v", f"{key}={value}"]
    out = run_tool(argv, ctx, stdin=io.BytesIO(sql.encode()), capture=True, env=env, timeout=QUERY_TIMEOUT)
    return out.decode("utf-8").strip()


def row_counts(database: str, env: Mapping[str, str], ctx: JobContext) -> dict[str, int]:
    return json.loads(_query(ROW_COUNTS_SQL, database, env, ctx) or "{}")


# --- backup -------------------------------------------------------------------


def backup(options: Mapping[str, Any], sink: Sink, ctx: JobContext) -> Facts:
    opts = validate(options)
    env = _env(opts, ctx)
    db = opts["database"]
    # The session holds the snapshot open until pg_dump has finished with it,
    # so it lives (and times out) with the dump, not like a short query.
    with Session([*_PSQL, "-d", db], ctx, env=env) as psql:
        # BEGIN prints nothing under -q: it goes with the query that answers.
        snapshot = psql.ask("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();")
        counts = json.loads(psql.ask(ROW_COUNTS_SQL) or "{}")
        if ctx.index is not None:
            objects = json.loads(psql.ask(INDEX_SQL) or "[]")
            for obj in objects:
                rows = counts.get(f"{obj['schema']}.{obj['name']}") if obj["type"] == "table" else None
                obj["rows"] = rows if isinstance(rows, int) else 0
            ctx.index.meta.update({"database": db, "objects": objects})
        run_tool(["pg_dump", "-w", "-Fc", f"--snapshot={snapshot}", "-d", db], ctx, stdout=sink, env=env)
    return {"database": db, "row_counts": counts, "row_counts_exact": True}


# --- restore ------------------------------------------------------------------


def restore(
    options: Mapping[str, Any], source: Source, target: str, overwrite: bool, ctx: JobContext
) -> Facts:
    """pg_restore into database `target`, in one transaction.

    A missing target is created (and dropped again if the restore fails); an
    existing one must be empty unless `overwrite`, which adds --clean --if-exists.
    With ctx.selection only the chosen tables are restored (see the module's
    docstring for what that brings back): an existing target is then fine as
    long as none of them exists there, and the facts count only them.
    """
    opts = validate(options)
    env = _env(opts, ctx)
    target = check_name(target, "postgresql: restore target database")
    chosen = _selection(ctx.selection) if ctx.selection is not None else None
    exists = (
        _query(
            "SELECT count(*) FROM pg_database WHERE datname = :'target';",
            MAINTENANCE_DB,
            env,
            ctx,
            target=target,
        )
        != "0"
    )
    clean = False
    if exists:
        if chosen is None:
            occupied = _query(_USER_OBJECTS_SQL, target, env, ctx) != "0"
        else:
            schema, tables = chosen
            occupied = (
                _query(_CHOSEN_EXIST_SQL, target, env, ctx, schema=schema, tables=json.dumps(tables)) != "0"
            )
        if occupied:
            if not overwrite:
                raise TargetNotEmpty(f"database {target}")
            clean = True
    else:
        run_tool(["createdb", "-w", "-T", "template0", target], ctx, env=env, timeout=QUERY_TIMEOUT)
    argv = ["pg_restore", "-w", "--single-transaction", "-d", target]
    if clean:
        argv[1:1] = ["--clean", "--if-exists"]
    if chosen is not None:
        # --strict-names: a name the dump lacks fails before anything is restored.
        # One argument each, --opt=value: a name starting with '-' is never read as an option.
        argv += ["--strict-names", f"--schema={chosen[0]}", *(f"--table={t}" for t in chosen[1])]
    with dropped_on_failure(_dropper(env, ctx), target, ctx, created=not exists):
        if chosen is not None and chosen[0] != "public":
            # pg_restore -t restores no schema: make it (kept if the restore then fails
            # in a target that already existed; dropped with a target made here).
            _query('CREATE SCHEMA IF NOT EXISTS :"schema";', target, env, ctx, schema=chosen[0])
        # --single-transaction: a failed restore rolls back instead of leaving half a database.
        try:
            run_tool(argv, ctx, stdin=source, env=env)
        except ToolFailed as exc:
            missing = _not_in_dump(ctx) if chosen is not None else []
            if missing:
                raise InvalidOptions(f"postgresql: {', '.join(missing)} not in this backup") from exc
            raise
    counts = row_counts(target, env, ctx)
    if chosen is not None:
        wanted = {f"{chosen[0]}.{t}" for t in chosen[1]}
        counts = {name: n for name, n in counts.items() if name in wanted}
    return {"database": target, "row_counts": counts, "row_counts_exact": True}


# How many of the chosen relations (any kind: an index or view of that name is in
# the way too) the target's schema already holds; names come in as psql variables.
_CHOSEN_EXIST_SQL = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = :'schema' AND c.relname IN (SELECT json_array_elements_text(:'tables'::json));"
)


_NOT_FOUND = re.compile(r'^pg_restore: pg_restore: error: (table|schema) "(.*)" not found$')


def _not_in_dump(ctx: JobContext) -> list[str]:
    """What --strict-names found missing, from pg_restore's lines in the log tail."""
    found = (_NOT_FOUND.match(line) for line in ctx.log.lines())
    return [f"{m[1]} {m[2]!r}" for m in found if m]


def _selection(selection: tuple[bytes, ...]) -> tuple[str, list[str]]:
    """b"schema/table" items: (the one schema, its tables)."""
    schemas: set[str] = set()
    tables: list[str] = []
    for item in selected_names(selection, NAME):
        schema, sep, table = item.partition("/")
        if not sep or not schema or not table or "/" in table:
            raise InvalidOptions(f"postgresql: selected {item!r} is not schema/table")
        schemas.add(schema)
        tables.append(table)
    if len(schemas) > 1:
        raise InvalidOptions("postgresql: choose tables from one schema per restore")
    return schemas.pop(), tables


def _dropper(env: Mapping[str, str], ctx: JobContext) -> Drop:
    def drop(database: str) -> None:
        run_tool(["dropdb", "-w", "--if-exists", database], ctx, env=env, timeout=QUERY_TIMEOUT)

    return drop


# --- restore test -------------------------------------------------------------


def scratch_target(options: Mapping[str, Any], ctx: JobContext) -> AbstractContextManager[str]:
    opts = validate(options)
    return scratch_database(_dropper(_env(opts, ctx), ctx), ctx)


def compare(expected: Facts, actual: Facts) -> list[str]:
    return compare_counts(expected.get("row_counts", {}), actual.get("row_counts", {}), "table")
