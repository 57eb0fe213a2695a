"""The server's allow-list: what the portal may ask of this server, as its administrator decided.

The agent runs as root, but the portal (or an application owner who tricks
it) chooses the jobs. So every job is checked, before anything is read or
written, against the `allow` section of the agent's own config file:

    {"paths": [...], "restore_roots": [...], "commands": [...],
     "databases": [...], "storage": [...]}

No section, or an empty one, allows nothing. Paths named by a job are
resolved (os.path.realpath) and compared component by component with the
entries, which are only normalised, never resolved: an entry means what the
admin wrote, and resolving it would let whoever can swap it for a symlink
widen it.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from backup_agent.errors import ConfigError, InvalidOptions, RefusedByAgent
from backup_agent.jobs import JobSpec

KEYS = ("paths", "restore_roots", "commands", "databases", "storage")
# The flag of `backup-agent allow` / `deny` for each key (enrol adds "allow-" to most of them).
FLAGS = {
    "paths": "path",
    "restore_roots": "restore-root",
    "commands": "command",
    "databases": "database",
    "storage": "storage",
}
DATABASE_PLUGINS = ("postgresql", "mysql")
# A database name as the plugins accept it, or an fnmatch pattern of one.
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_$*?\[\]!-]{1,128}$")


# --- entries --------------------------------------------------------------------


def check_path(value: Any) -> str:
    """An absolute path without NUL, '.' or '..', normalised: '/srv//app/' is '/srv/app'."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if "\0" in value:
        raise ValueError(f"{value!r} contains a NUL byte")
    parts = [part for part in value.split("/") if part]
    if "." in parts or ".." in parts:
        # An entry with '..' means different folders depending on symlinks: say which one.
        raise ValueError(f"{value!r} contains '.' or '..'; write the folder it means")
    return "/" + "/".join(parts)


class DatabaseEntry(NamedTuple):
    """A parsed `databases` entry: PLUGIN:NAME[@HOST[:PORT]].

    host None is the local default connection: the one the agent's own
    environment (plugin_env, the client library's defaults) picks for a job
    that names no host and no port.
    """

    plugin: str
    pattern: str  # an fnmatch pattern of database names
    host: str | None = None  # as _host normalises it
    port: int | None = None

    def __str__(self) -> str:
        where = "" if self.host is None else f"@{self.host}" + ("" if self.port is None else f":{self.port}")
        return f"{self.plugin}:{self.pattern}{where}"


def parse_database(value: Any) -> DatabaseEntry:
    """'PLUGIN:NAME[@HOST[:PORT]]', strictly; ValueError says what is wrong.

    PLUGIN is postgresql or mysql; NAME a database name or fnmatch pattern
    ('orders_*'); HOST a host name, an IPv4 address, an IPv6 address in
    brackets ('[2001:db8::5]') or a socket folder ('/var/run/postgresql');
    PORT 1-65535.
    """
    plugin, _, rest = value.partition(":") if isinstance(value, str) else ("", "", "")
    if plugin not in DATABASE_PLUGINS:
        raise ValueError(
            f"{value!r} is not PLUGIN:NAME[@HOST[:PORT]] with PLUGIN one of {', '.join(DATABASE_PLUGINS)}"
        )
    name, at, where = rest.partition("@")
    if not _DATABASE_NAME.match(name):
        raise ValueError(
            f"{value!r}: NAME must be a database name or pattern (letters, digits, _$- and *?[]!)"
        )
    if not at:
        return DatabaseEntry(plugin, name)
    if where.startswith("["):
        address, bracket, after = where.partition("]")
        address, has_port, port = address + bracket, after.startswith(":"), after[1:]
        if not bracket or (after and not has_port):
            raise ValueError(f"{value!r}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
    elif where.count(":") > 1 and not where.startswith("/"):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. @[2001:db8::5]:5432")
    else:
        address, colon, port = where.partition(":")
        has_port = bool(colon)
    try:
        host = _host(address)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if not has_port:
        return DatabaseEntry(plugin, name, host)
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: PORT must be a number from 1 to 65535, not {port!r}")
    return DatabaseEntry(plugin, name, host, int(port))


def check_database(value: Any) -> str:
    """A `databases` entry, validated and normalised (parse_database, _host)."""
    return str(parse_database(value))


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_SOCKET_FOLDER = re.compile(r"^/[A-Za-z0-9_./-]+$")  # what the plugins accept (plugins/_db.py)


def _host(value: str) -> str:
    """A host as the allow-list compares it; ValueError unless it is one of the four forms.

    Host names are lower-cased (DNS names are case-insensitive), IPv4
    addresses checked, IPv6 addresses bracketed and compressed
    ('[2001:db8::5]'), socket folders normalised like paths (no '.'/'..').
    Jobs' hosts go through it too, so '::1', '[::1]' and '[0:0::1]' are one
    host, and so are 'DB01' and 'db01'.
    """
    if value.startswith("/"):
        folder = check_path(value)
        if folder == "/" or not _SOCKET_FOLDER.match(folder):
            raise ValueError(f"socket folder {value!r} must be a folder of letters, digits and _.-/")
        return folder
    if value.startswith("[") or ":" in value:
        address = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        if "%" in address:  # a zone ('%eth0') names an interface, not a host
            raise ValueError(f"{value!r}: an IPv6 address with a zone is not supported")
        try:
            return f"[{ipaddress.IPv6Address(address).compressed}]"
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv6 address") from None
    if re.fullmatch(r"[0-9.]+", value):
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
    if not _HOST_NAME.match(value.lower()):
        raise ValueError(f"{value!r} is not a host name, IPv4 address, [IPv6 address] or socket folder")
    return value.lower()


def connection_of(options: dict[str, Any]) -> tuple[str | None, int | None]:
    """Where a database job connects, as entries name it: (host, port); (None, None) is the local default.

    ValueError when no entry can name it. The job's `user` is not part of
    it, on purpose: the portal chooses the user, and a wrong one only fails
    to log in with this server's password. What must not be the portal's
    choice is where the agent connects, and so sends that password.
    """
    host, port = options.get("host"), options.get("port")
    if host is None:
        if port is not None:
            raise ValueError(
                f"port {port} without a host: this server's allow-list pins a port only with a host, "
                "so the client's options must name the host too"
            )
        return None, None
    try:
        return _host(host), port
    except ValueError as exc:
        raise ValueError(f"host {exc}") from None


def database_allowed(entries: Iterable[str], plugin: str, name: str | None, options: dict[str, Any]) -> bool:
    """Whether an entry allows database `name` of `plugin` over the connection in a job's `options`.

    An entry without @HOST allows only jobs with neither host nor port; one
    with @HOST only jobs whose host is HOST, and whose port is PORT (an entry
    without PORT: the job sets no port). name None matches any name: a restore
    test's scratch database is the agent's own, only its connection is checked.
    """
    try:
        connection = connection_of(options)
    except ValueError:
        return False
    for entry in map(parse_database, entries):
        if (
            entry.plugin == plugin
            and (entry.host, entry.port) == connection
            and (name is None or fnmatch.fnmatchcase(name, entry.pattern))
        ):
            return True
    return False


_CHECKS = {"databases": check_database}


def checked(key: str, entries: Iterable[Any]) -> tuple[str, ...]:
    """The entries of one key, validated and normalised, duplicates dropped; ValueError names a bad one."""
    check = _CHECKS.get(key, check_path)
    return tuple(dict.fromkeys(check(entry) for entry in entries))


# --- the list -------------------------------------------------------------------


class Problem(NamedTuple):
    """One thing a job needs that is not allowed."""

    text: str  # "/etc is not in this server's allow-list for backups"
    key: str | None = None  # the allow-list key that would allow it; None when no entry can
    entry: str = ""


@dataclass(frozen=True)
class Permit:
    """A job the allow-list lets through.

    `restore_only_under` is set for an in-place files restore (overwrite into a
    folder above the allowed paths, usually "/"): the files plugin then refuses
    every archive member that would land outside these paths. None: the whole
    target is allowed.
    """

    restore_only_under: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AllowList:
    paths: tuple[str, ...] = ()  # the files plugin may read these (and restore in place under them)
    restore_roots: tuple[str, ...] = ()  # files restores may write new copies here
    commands: tuple[str, ...] = ()  # programs the command plugin may run, by exact absolute path
    databases: tuple[str, ...] = ()  # "postgresql:NAME[@HOST[:PORT]]", NAME an fnmatch pattern
    storage: tuple[str, ...] = ()  # storage roots backups may be written to and read from

    @classmethod
    def from_json(cls, data: Any, source: str = "config") -> AllowList:
        """The config's `allow` object, strictly: unknown keys and wrong types are a ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: 'allow' must be an object")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown keys in 'allow': {', '.join(unknown)}")
        values: dict[str, tuple[str, ...]] = {}
        for key, entries in data.items():
            if not isinstance(entries, list):
                raise ConfigError(f"{source}: allow.{key} must be a list")
            try:
                values[key] = checked(key, entries)
            except ValueError as exc:
                raise ConfigError(f"{source}: allow.{key}: {exc}") from None
        return cls(**values)

    def to_json(self) -> dict[str, list[str]]:
        return {key: list(getattr(self, key)) for key in KEYS}

    def is_empty(self) -> bool:
        return not any(getattr(self, key) for key in KEYS)

    def added(self, other: AllowList) -> AllowList:
        return AllowList(
            **{key: tuple(dict.fromkeys(getattr(self, key) + getattr(other, key))) for key in KEYS}
        )

    def removed(self, other: AllowList) -> AllowList:
        return AllowList(
            **{key: tuple(e for e in getattr(self, key) if e not in getattr(other, key)) for key in KEYS}
        )

    # --- the check ------------------------------------------------------------------

    def check_job(self, spec: JobSpec) -> Permit:
        """Raise RefusedByAgent unless this server allows everything the job would touch.

        Called by the executor before any storage or plugin code runs, with
        spec.options already validated by the plugin. Every problem is listed,
        so one `backup-agent allow …` line fixes the job.
        """
        problems = self._storage(spec.storage)
        permit = Permit()
        if spec.kind == "backup":
            problems += self._backup(spec)
        elif spec.kind == "restore":
            more, permit = self._restore(spec)
            problems += more
        elif spec.kind == "restore_test" and spec.plugin == "command":
            # The scratch target is the agent's own choice; the program still runs as root.
            problems += self._program(spec.options, "restore_argv")
        elif spec.kind == "restore_test" and spec.plugin in DATABASE_PLUGINS and _connects(spec.options):
            # The scratch database is the agent's own, but it is created over the
            # client's connection, with plugin_env's password: that must be pinned.
            problems += self._database(spec.plugin, None, spec.options, "restore tests")
        if problems:
            raise refusal(problems)
        return permit

    def grants_storage(self, root: str) -> bool:
        """Whether backups may be written under (or removed from) the storage root ``root``."""
        real = resolved(root)
        return any(is_under(real, allowed) for allowed in self.storage)

    def _storage(self, storage: Any) -> list[Problem]:
        storage = storage if isinstance(storage, dict) else {}
        if storage.get("kind") != "filesystem":
            raise InvalidOptions(f"storage kind {storage.get('kind')!r} is not supported by this agent")
        root = storage.get("root")
        if not isinstance(root, str) or not root.startswith("/"):
            raise InvalidOptions(f"storage root must be an absolute path, got {root!r}")
        real = resolved(root)
        if self.grants_storage(real):
            return []
        return [Problem(f"storage root {_shown(root, real)} {_NOT_IN} for storage", "storage", real)]

    def _backup(self, spec: JobSpec) -> list[Problem]:
        if spec.plugin == "files":
            return [problem for path in spec.options["paths"] for problem in self._source_path(path)]
        if spec.plugin in DATABASE_PLUGINS:
            return self._database(spec.plugin, spec.options["database"], spec.options, "backups")
        if spec.plugin == "command":
            return self._program(spec.options, "backup_argv")
        raise RefusedByAgent(f"this agent has no allow-list rule for plugin {spec.plugin!r}")

    def _source_path(self, path: str) -> list[Problem]:
        real = resolved(path)
        if any(is_under(real, allowed) for allowed in self.paths):
            return []
        return [Problem(f"{_shown(path, real)} {_NOT_IN} for backups", "paths", real)]

    def _restore(self, spec: JobSpec) -> tuple[list[Problem], Permit]:
        if spec.plugin == "files":
            return self._files_target(spec.target, spec.overwrite)
        if spec.plugin in DATABASE_PLUGINS:
            # Into database `target`, over the connection in the client's options.
            return self._database(spec.plugin, str(spec.target), spec.options, "restores"), Permit()
        if spec.plugin == "command":
            return self._program(spec.options, "restore_argv"), Permit()
        raise RefusedByAgent(f"this agent has no allow-list rule for plugin {spec.plugin!r}")

    def _files_target(self, target: Any, overwrite: bool) -> tuple[list[Problem], Permit]:
        if not isinstance(target, str) or not target.startswith("/"):
            raise InvalidOptions(f"files: restore target must be an absolute path, got {target!r}")
        real = resolved(target)
        if any(is_under(real, allowed) for allowed in (*self.restore_roots, *self.paths)):
            return [], Permit()
        # In place: archives hold paths relative to "/", so putting data back
        # where it came from means overwriting into "/" (or another folder
        # above the allowed paths). Allowed, but only members under the
        # allowed paths may be written; the files plugin checks each one.
        below = tuple(allowed for allowed in self.paths if is_under(allowed, real))
        if overwrite and below:
            return [], Permit(restore_only_under=below)
        return [
            Problem(f"restore target {_shown(target, real)} {_NOT_IN} for restores", "restore_roots", real)
        ], Permit()

    def _database(
        self, plugin: str, name: str | None, options: dict[str, Any], purpose: str
    ) -> list[Problem]:
        """Database `name` (None: a restore test's scratch one) over the connection in `options`."""
        if database_allowed(self.databases, plugin, name, options):
            return []
        database = f"{plugin}:{options['database'] if name is None else name}"
        try:
            host, port = connection_of(options)
        except ValueError as exc:
            return [Problem(f"database {database} cannot be allowed: {exc}")]
        entry = DatabaseEntry(plugin, database.partition(":")[2], host, port)
        where = "" if host is None else f" on {str(entry).partition('@')[2]}"
        if name is None:
            text = f"the {plugin} connection{where} {_NOT_IN} for restore tests"
        else:
            text = f"database {database}{where} {_NOT_IN} for {purpose}"
        return [Problem(text, "databases", str(entry))]

    def _program(self, options: dict[str, Any], key: str) -> list[Problem]:
        argv = options.get(key)
        if not argv:
            return []  # nothing would run (the plugin itself refuses a restore without restore_argv)
        program = argv[0]
        if program in self.commands:
            return []
        if not program.startswith("/"):
            # A bare name is looked up on PATH, which is not the admin's decision to trust.
            return [
                Problem(
                    f"program {program} is not an absolute path, and this server's allow-list names "
                    f"programs by absolute path only (the client's {key}[0] must be the program's full path)"
                )
            ]
        return [Problem(f"program {program} {_NOT_IN} for commands", "commands", program)]


_NOT_IN = "is not in this server's allow-list"


def _connects(options: dict[str, Any]) -> bool:
    """The job names a connection other than the local default one."""
    return options.get("host") is not None or options.get("port") is not None


def is_under(path: str, root: str) -> bool:
    """`path` is `root` or inside it, component by component: /srv/app2 is not under /srv/app."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolved(path: str) -> str:
    """Where a job's path really leads: '..' and symlinks resolved; a missing tail is kept as written."""
    return os.path.realpath(os.path.normpath(path))


def _shown(path: str, real: str) -> str:
    return path if os.path.normpath(path) == real else f"{path} (which resolves to {real})"


def refusal(problems: list[Problem]) -> RefusedByAgent:
    """One error for all problems, ending with the one command that would allow the job."""
    detail = "; ".join(problem.text for problem in problems)
    fixes = dict.fromkeys(
        f"--{FLAGS[problem.key]} {shlex.quote(problem.entry)}" for problem in problems if problem.key
    )
    if fixes:
        detail += "; to allow it, run on the server as root: backup-agent allow " + " ".join(fixes)
    return RefusedByAgent(detail)


def check_restored_member(name: str, final: str, within: tuple[str, ...]) -> None:
    """In-place restores: refuse an archive member that would land outside the allowed paths."""
    if not any(is_under(final, allowed) for allowed in within):
        # Names that are not UTF-8 are compared byte for byte but shown readably.
        final = final.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise refusal(
            [
                Problem(
                    f"archive member {name} would be restored to {final}, outside this server's "
                    "allow-list for in-place restores",
                    "paths",
                    final,
                )
            ]
        )
