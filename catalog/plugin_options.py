"""What each plugin's options may hold; the one validator used by admin, forms and API.

Options end up as arguments of pg_dump, mysqldump, tar or an admin-defined
command on an application server, so they are checked strictly here: known
keys only, absolute paths without ``..``, database names from a safe alphabet.
"""

from __future__ import annotations

import re
import string
from pathlib import PurePosixPath

from django.core.exceptions import ValidationError

from catalog.choices import Plugin

DATABASE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$")
DB_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}$")
HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
COMMAND_PLACEHOLDERS = {"target", "job_id", "client"}


def validate_absolute_path(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError({field: "Enter an absolute path such as /srv/app/data."})
    if "\x00" in value:
        raise ValidationError({field: "The path contains a NUL character."})
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValidationError({field: f"{value!r} is not absolute: it must start with /."})
    if ".." in path.parts:
        raise ValidationError({field: f"{value!r} must not contain '..'."})
    return value


def _check_keys(options: dict, allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValidationError(
            {"options": f"Unknown option(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}."}
        )
    missing = sorted(required - set(options))
    if missing:
        raise ValidationError({"options": f"Missing option(s): {', '.join(missing)}."})


def _validate_files(options: dict) -> None:
    _check_keys(options, {"paths", "exclude"}, {"paths"})
    paths = options["paths"]
    if not isinstance(paths, list) or not paths:
        raise ValidationError({"paths": "List at least one absolute path to back up."})
    for path in paths:
        validate_absolute_path(path, field="paths")
    exclude = options.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(p, str) and p for p in exclude):
        raise ValidationError({"exclude": "Exclusions must be a list of glob patterns."})


def _validate_database(options: dict) -> None:
    _check_keys(options, {"database", "host", "port", "user"}, {"database"})
    if not isinstance(options["database"], str) or not DATABASE_NAME.fullmatch(options["database"]):
        raise ValidationError(
            {"database": "Use letters, digits, _, $ or - (at most 63 characters) for the database name."}
        )
    if "host" in options and not (isinstance(options["host"], str) and HOST.fullmatch(options["host"])):
        raise ValidationError({"host": "Enter a host name or IP address."})
    if "port" in options:
        port = options["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValidationError({"port": "The port must be a number from 1 to 65535."})
    if "user" in options and not (isinstance(options["user"], str) and DB_USER.fullmatch(options["user"])):
        raise ValidationError({"user": "Use letters, digits, _, ., @ or - for the database user."})


def _validate_argv(argv: object, *, field: str) -> None:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValidationError({field: "Give the command as a list of arguments, program first."})
    validate_absolute_path(argv[0], field=field)
    for arg in argv:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(arg) if name is not None}
        except ValueError as exc:
            raise ValidationError({field: f"{arg!r}: {exc}"}) from exc
        unknown = names - COMMAND_PLACEHOLDERS
        if unknown:
            raise ValidationError(
                {field: f"Unknown placeholder(s) {sorted(unknown)}; use {sorted(COMMAND_PLACEHOLDERS)}."}
            )
        # A trial run catches what parsing lets through ("{target!x}", nested specs):
        # the agent formats each argument the same way, and must never fail there.
        try:
            arg.format(**dict.fromkeys(COMMAND_PLACEHOLDERS, "x"))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValidationError({field: f"{arg!r} is not a valid argument template: {exc}"}) from exc


def _validate_command(options: dict) -> None:
    _check_keys(options, {"backup_argv", "restore_argv"}, {"backup_argv", "restore_argv"})
    _validate_argv(options["backup_argv"], field="backup_argv")
    _validate_argv(options["restore_argv"], field="restore_argv")


_VALIDATORS = {
    Plugin.FILES: _validate_files,
    Plugin.POSTGRESQL: _validate_database,
    Plugin.MYSQL: _validate_database,
    Plugin.COMMAND: _validate_command,
}


def validate_options(plugin: str, options: object) -> None:
    """Raise ValidationError with messages a person understands if ``options`` do not fit ``plugin``."""
    if plugin not in _VALIDATORS:
        raise ValidationError({"plugin": f"Unknown plugin {plugin!r}."})
    if not isinstance(options, dict):
        raise ValidationError({"options": "Options must be a JSON object."})
    _VALIDATORS[plugin](options)


def validate_restore_target(plugin: str, location: object) -> str:
    """A restore target: a database name for database plugins, else an absolute path without ``..``."""
    if plugin in (Plugin.POSTGRESQL, Plugin.MYSQL):
        if not isinstance(location, str) or not DATABASE_NAME.fullmatch(location):
            raise ValidationError(
                {"target_location": "Give the name of the database to restore into "
                 "(letters, digits, _, $ or -, at most 63 characters)."}
            )
        return location
    return validate_absolute_path(location, field="target_location")
