"""Plugins: one module per kind of workload, all with the same small interface.

A plugin module provides:

    NAME: str                      "files", "postgresql", ...
    DATA_NAME: str                 file name of the stream on storage ("data.tar", ...)
    available(env) -> bool         are the tools it needs installed here?
    validate(options) -> dict      check and normalise the client's options
    backup(options, sink, ctx) -> facts
        write the whole backup stream into sink.write(); return the facts
        (member counts, row counts...) that go into manifest.json
    restore(options, source, target, overwrite, ctx) -> facts
        read the stream from source.read() and rebuild it at `target`
        (a directory, a database name, ...), refusing existing data unless
        `overwrite`; return facts describing what was restored
    scratch_target(options, ctx) -> context manager yielding a target
        a throw-away place for a restore test, removed on exit
    compare(expected, actual) -> list[str]
        differences between a backup's facts and a restore test's facts

Plugins know nothing about storage, compression, checksums or the portal:
the executor hands them a verified stream and a sink.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import cast

from backup_agent.errors import InvalidOptions
from backup_agent.plugins import command, files, mysql, postgresql
from backup_agent.plugins.base import Plugin

_REGISTRY: dict[str, Plugin] = {m.NAME: cast(Plugin, m) for m in (files, postgresql, mysql, command)}


def get(name: str) -> Plugin:
    if name not in _REGISTRY:
        raise InvalidOptions(f"plugin {name!r} is not known to this agent")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


def available(plugin_env: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Plugins whose tools are installed here; sent to the portal on enrol and poll.

    Each is looked up with its own environment (the config's plugin_env may
    put e.g. /usr/lib/postgresql/16/bin on PATH for the postgresql plugin).
    """
    plugin_env = plugin_env or {}
    return [
        name
        for name, plugin in _REGISTRY.items()
        if plugin.available({**os.environ, **plugin_env.get(name, {})})
    ]
