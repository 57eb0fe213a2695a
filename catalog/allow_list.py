"""The agent's allow-list, as the portal sees it: shown to people, and checked to flag clients early.

The server's administrator writes the allow-list on the host and the agent
enforces it (backup_agent/allow.py); the agent reports it on each poll. The
portal cannot change it and does not rely on it: this module only tells the
backup team and the owners, before a job fails, which clients the agent will
refuse and what the server's administrator would run to allow them.
"""

from __future__ import annotations

import fnmatch
import posixpath
import shlex

from catalog.choices import Plugin, StorageKind

KEYS = ("paths", "restore_roots", "commands", "databases", "storage")
LABELS = {
    "paths": "may back up",
    "restore_roots": "may restore into",
    "commands": "may run",
    "databases": "may dump",
    "storage": "may write backups to",
}


def normalise(raw: object) -> dict[str, list[str]] | None:
    """What an agent reported, reduced to lists of strings; None when it reported nothing usable."""
    if not isinstance(raw, dict):
        return None
    return {
        key: sorted({item for item in raw.get(key, []) if isinstance(item, str) and item})
        if isinstance(raw.get(key), list)
        else []
        for key in KEYS
    }


def describe(allow_list: dict | None) -> str:
    if allow_list is None:
        return "not reported yet (an agent older than the allow-list, or it has not polled)"
    parts = [f"{LABELS[key]}: {', '.join(allow_list.get(key) or []) or 'nothing'}" for key in KEYS]
    return "; ".join(parts)


def _under(path: str, roots: list[str]) -> bool:
    path = posixpath.normpath(path)
    roots = [posixpath.normpath(root) for root in roots]
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def violations(plugin: str, options: dict, storage_root: str, allow_list: dict | None) -> list[str]:
    """What the agent will refuse for a client with these settings, each with the command that allows it.

    Empty when the agent has not reported an allow-list: the portal does not guess.
    """
    if allow_list is None:
        return []
    problems = []
    if storage_root and not _under(storage_root, allow_list.get("storage", [])):
        problems.append(_problem(f"storage {storage_root}", "--storage", storage_root))
    if plugin == Plugin.FILES:
        for path in options.get("paths", []):
            if not _under(path, allow_list.get("paths", [])):
                problems.append(_problem(f"path {path}", "--path", path))
    elif plugin in (Plugin.POSTGRESQL, Plugin.MYSQL):
        wanted = database_entry(plugin, options)
        if not any(_database_matches(entry, wanted) for entry in allow_list.get("databases", [])):
            problems.append(_problem(f"database {wanted}", "--database", wanted))
    elif plugin == Plugin.COMMAND:
        programs = _programs(options)
        for program in sorted(programs - set(allow_list.get("commands", []))):
            problems.append(_problem(f"program {program}", "--command", program))
    return problems


def database_entry(plugin: str, options: dict) -> str:
    """The entry that allows this client: ``PLUGIN:NAME[@HOST[:PORT]]``.

    The agent pins the connection, not only the name: a portal that could pick
    the host would make the agent send the server's database password there.
    """
    entry = f"{plugin}:{options.get('database', '')}"
    host, port = options.get("host"), options.get("port")
    if host:
        entry += f"@[{host}]" if ":" in host and not host.startswith(("/", "[")) else f"@{host}"
        if port:
            entry += f":{port}"
    return entry


def _database_matches(entry: str, wanted: str) -> bool:
    # A fair copy of the agent's rule (backup_agent/allow.py), for flagging only: the name part
    # may be a pattern, the connection part must be the same.
    pattern, _, where = entry.partition("@")
    name, _, wanted_where = wanted.partition("@")
    return fnmatch.fnmatchcase(name, pattern) and where.lower() == wanted_where.lower()


def enrol_flags(plugin: str, options: dict, storage_root: str) -> list[str]:
    """``backup-agent enrol`` arguments that allow this client and nothing more."""
    flags: list[str] = []
    if plugin == Plugin.FILES:
        for path in options.get("paths", []):
            flags += ["--allow-path", path]
    elif plugin in (Plugin.POSTGRESQL, Plugin.MYSQL):
        flags += ["--allow-database", database_entry(plugin, options)]
    elif plugin == Plugin.COMMAND:
        programs = _programs(options)
        for program in sorted(programs):
            flags += ["--allow-command", program]
    if storage_root:
        flags += ["--allow-storage", storage_root]
    return flags


def _programs(options: dict) -> set[str]:
    """The programs a command client runs: what the agent must allow, and what enrol allows."""
    return {argv[0] for key in ("backup_argv", "restore_argv") if (argv := options.get(key))}


def _problem(what: str, flag: str, value: str) -> str:
    return f"{what} is not allowed; on the server, as root: backup-agent allow {flag} {shlex.quote(value)}"


def refusals(client) -> list[str]:
    """``violations`` for a catalog client on its agent (select_related agent and policy's storage)."""
    if client.agent is None:
        return []
    storage = client.policy.storage_target
    root = storage.location if storage.kind == StorageKind.FILESYSTEM else ""
    return violations(client.plugin, client.options, root, client.agent.allow_list)
