"""What the database plugins share: option checks and their throw-away databases."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from backup_agent.context import JobContext
from backup_agent.errors import InvalidOptions
from backup_agent.plugins.base import reject_unknown, require_mapping

# Strict on purpose, and the same alphabets the portal accepts
# (catalog/plugin_options.py): these names end up in argv and, quoted, in SQL.
# A name matching them needs no escaping anywhere: no quotes, backticks or
# spaces, no '=' that libpq would read as a connection string, no leading '-'.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"  # a host name or IPv4 address
    r"|\[?[0-9A-Fa-f:.]+\]?"  # an IPv6 address
    r"|/[A-Za-z0-9_./-]+)$"  # a Unix socket directory
)


def check_name(value: Any, what: str, pattern: re.Pattern[str] = NAME) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidOptions(f"{what} {value!r} must match {pattern.pattern}")
    return value


def validate_connection(options: Mapping[str, Any], plugin: str) -> dict[str, Any]:
    """{"database", "host"?, "port"?, "user"?}: checked and normalised."""
    options = require_mapping(options)
    reject_unknown(options, {"database", "host", "port", "user"})
    result: dict[str, Any] = {"database": check_name(options.get("database"), f"{plugin}: database")}
    host = options.get("host")
    if host is not None:
        if not isinstance(host, str) or not _HOST.match(host):
            raise InvalidOptions(f"{plugin}: host {host!r} is not a host name, IP address or socket folder")
        result["host"] = host
    port = options.get("port")
    if port is not None:
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidOptions(f"{plugin}: port {options.get('port')!r} is not a TCP port")
        result["port"] = port
    user = options.get("user")
    if user is not None:
        result["user"] = check_name(user, f"{plugin}: user", USER)
    return result


def selected_names(selection: tuple[bytes, ...], plugin: str) -> list[str]:
    """A selective restore's items as text: UTF-8, none empty, duplicates dropped, order kept.

    These are names of tables, never options: they reach argv only as one
    `--table=...` argument and SQL only as quoted variables or hex.
    """
    names: list[str] = []
    for item in selection:
        try:
            name = bytes(item).decode("utf-8")
        except (UnicodeDecodeError, TypeError):
            raise InvalidOptions(f"{plugin}: selected name {item!r} is not UTF-8") from None
        if not name or "\0" in name:
            raise InvalidOptions(f"{plugin}: selected name {item!r} is not a table name")
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidOptions(f"{plugin}: a selective restore needs at least one table")
    return names


# --- databases a job creates and must not leave behind -------------------------

# Drops one database (IF EXISTS); raises when the server refuses or cannot be reached.
Drop = Callable[[str], object]
SCRATCH_PREFIX = "backup_agent_test_"


def scratch_name(job_id: int) -> str:
    """A restore test's database: the job's id for people, a random part so retries never collide.

    It matches NAME, so restore() accepts it like any target.
    """
    return f"{SCRATCH_PREFIX}{int(job_id)}_{secrets.token_hex(4)}"


def drop_quietly(drop: Drop, database: str, ctx: JobContext) -> None:
    """Drop `database`; a failure goes into the job's log tail, never over the error that led here."""
    try:
        drop(database)
    except Exception as exc:
        ctx.note(f"could not drop database {database}: {exc}")


@contextmanager
def scratch_database(drop: Drop, ctx: JobContext) -> Iterator[str]:
    """A fresh name for a restore test (the restore creates it), dropped on the way out whatever happened."""
    name = scratch_name(ctx.job_id)
    try:
        yield name
    finally:
        drop_quietly(drop, name, ctx)


@contextmanager
def dropped_on_failure(drop: Drop, database: str, ctx: JobContext, *, created: bool) -> Iterator[None]:
    """A restore into `database`: if it fails (or is cancelled) and this job `created` it, drop it again."""
    try:
        yield
    except BaseException:
        if created:
            drop_quietly(drop, database, ctx)
        raise
