"""The `postgresql` plugin: pg_dump -Fc streamed to storage, pg_restore into a named database.

Options: {"database": "orders", "host"?: "db01", "port"?: 5432, "user"?: "backup"}.
The password is never an option (options are stored by the portal): put
PGPASSWORD in the agent config's plugin_env.postgresql, or use ~/.pgpass.

The manifest's row counts are exact and consistent with the dump: they are
counted inside a REPEATABLE READ transaction whose snapshot pg_dump reuses
(--snapshot), so a busy database still gives counts that a restore test can
compare one for one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import TargetNotEmpty
from backup_agent.plugins._db import (
    Drop,
    check_name,
    dropped_on_failure,
    scratch_database,
    validate_connection,
)
from backup_agent.plugins.base import Facts, compare_counts
from backup_agent.process import Session, find_program, run_tool

NAME = "postgresql"
DATA_NAME = "data.dump"
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
        run_tool(["pg_dump", "-w", "-Fc", f"--snapshot={snapshot}", "-d", db], ctx, stdout=sink, env=env)
    return {"database": db, "row_counts": counts, "row_counts_exact": True}


# --- restore ------------------------------------------------------------------


def restore(
    options: Mapping[str, Any], source: Source, target: str, overwrite: bool, ctx: JobContext
) -> Facts:
    """pg_restore into database `target`, in one transaction.

    A missing target is created (and dropped again if the restore fails); an
    existing one must be empty unless `overwrite`, which adds --clean --if-exists.
    """
    opts = validate(options)
    env = _env(opts, ctx)
    target = check_name(target, "postgresql: restore target database")
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
        if _query(_USER_OBJECTS_SQL, target, env, ctx) != "0":
            if not overwrite:
                raise TargetNotEmpty(f"database {target}")
            clean = True
    else:
        run_tool(["createdb", "-w", "-T", "template0", target], ctx, env=env, timeout=QUERY_TIMEOUT)
    argv = ["pg_restore", "-w", "--single-transaction", "-d", target]
    if clean:
        argv[1:1] = ["--clean", "--if-exists"]
    with dropped_on_failure(_dropper(env, ctx), target, ctx, created=not exists):
        # --single-transaction: a failed restore rolls back instead of leaving half a database.
        run_tool(argv, ctx, stdin=source, env=env)
    return {"database": target, "row_counts": row_counts(target, env, ctx), "row_counts_exact": True}


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
