"""Strict parsers for settings read from the environment.

A typo in production configuration must stop the process at start-up, not
silently fall back to a default: ``DEBUG=Fasle`` is an error, not "true".
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url


class ConfigError(Exception):
    """Raised when an environment variable has a value we cannot accept."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def get_str(name: str, default: str | None = None) -> str | None:
    """Return ``$NAME``, or the contents of the file named by ``$NAME_FILE`` (for secrets)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def get_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def get_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def get_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def get_map(name: str) -> dict[str, str]:
    """``$NAME`` as ``key=value`` pairs separated by commas ("backup-ops=backup-admins,…")."""
    mapping: dict[str, str] = {}
    for item in get_list(name, []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{name}: {item!r} is not key=value")
        mapping[key.strip()] = value.strip()
    return mapping


def get_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


#: The schemes the portal runs on; dj-database-url knows more (MySQL, Oracle…) that it was never tested on.
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "pgsql")


def parse_database_url(url: str, *, base_dir: Path) -> dict:
    """Turn ``sqlite:///var/portal.sqlite3`` or ``postgres://u:p@h:5432/db`` into DATABASES['default'].

    dj-database-url reads the URL; this adds what the portal promises on top:
    only SQLite and PostgreSQL, every mistake a ``ConfigError`` naming
    DATABASE_URL, and relative SQLite paths taken from ``base_dir`` so the web
    server, the worker and management commands all open the same file wherever
    they start. Connection settings and SQLite's options are the settings' own.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DATABASE_SCHEMES:
            raise ConfigError(
                f"DATABASE_URL scheme {scheme!r} is not supported (use sqlite:/// or postgres://)"
            )
        if scheme == "sqlite" and parts.netloc not in ("", ":memory:"):
            # dj-database-url would take sqlite://portal.sqlite3 for an in-memory database: data lost at exit.
            raise ConfigError(
                "DATABASE_URL for SQLite names a file after three slashes (sqlite:///relative/path) "
                "or four (sqlite:////absolute/path)"
            )
        parsed = dj_database_url.parse(url)
    except ValueError as exc:
        # The library's ParseError hides the cause (a port that is no number…); show it.
        raise ConfigError(f"DATABASE_URL cannot be read: {exc.__context__ or exc}") from exc
    if scheme == "sqlite":
        name = parsed["NAME"]
        if name != ":memory:" and not Path(name).is_absolute():
            name = str(base_dir / name)
        return {"ENGINE": parsed["ENGINE"], "NAME": name}
    if not parsed["NAME"]:
        raise ConfigError("DATABASE_URL for PostgreSQL must name a database")
    return {
        **{key: parsed[key] for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST")},
        "PORT": str(parsed["PORT"]),
        "OPTIONS": {key: _option_text(value) for key, value in parsed.get("OPTIONS", {}).items()},
    }


def _option_text(value: object) -> str:
    """An option as the URL wrote it: dj-database-url reads "5" as 5, and a repeated option as a list."""
    if isinstance(value, list):
        value = value[-1]  # the last one wins, as in a query string read into a dict
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
