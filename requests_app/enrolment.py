"""The one command a requester pastes on the new server: enrol, with the allow-list the client needs.

The agent refuses whatever its server's administrator did not allow; putting
the requested client's paths, database or program and its storage into the
enrol command keeps the common case one paste. Every argument is quoted: the
paths come from the requester.
"""

from __future__ import annotations

import shlex

from django.conf import settings

from catalog.choices import Plugin, StorageKind
from requests_app.models import ClientRequest


def allow_flags(plugin: str, options: dict, storage_root: str) -> list[str]:
    """``--allow-…`` arguments that let the agent run this client and nothing more."""
    flags: list[str] = []
    if plugin == Plugin.FILES:
        for path in options.get("paths", []):
            flags += ["--allow-path", path]
    elif plugin in (Plugin.POSTGRESQL, Plugin.MYSQL):
        flags += ["--allow-database", f"{plugin}:{options.get('database', '')}"]
    elif plugin == Plugin.COMMAND:
        programs = {argv[0] for key in ("backup_argv", "restore_argv") if (argv := options.get(key))}
        for program in sorted(programs):
            flags += ["--allow-command", program]
    if storage_root:
        flags += ["--allow-storage", storage_root]
    return flags


def enrol_command(request: ClientRequest, token: str) -> str:
    storage = request.policy.storage_target
    # Only a filesystem target is a path on the server; object storage needs no path allowed.
    mounted_root = storage.location if storage.kind == StorageKind.FILESYSTEM else ""
    argv = [
        "backup-agent",
        "enrol",
        "--server",
        settings.PORTAL_BASE_URL,
        "--token",
        token,
        "--hostname",
        request.hostname,
        *allow_flags(request.plugin, request.options, mounted_root),
    ]
    return shlex.join(argv)
