"""The plugin interface and helpers shared by the plugin modules."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import InvalidOptions

Facts = dict[str, Any]


class Plugin(Protocol):
    """What every plugin module provides; see backup_agent.plugins for the contract."""

    NAME: str
    DATA_NAME: str
    # True: backup() fills ctx.index (backup_agent/file_index.py) and restore()
    # honours ctx.selection; False: no index, and a selective restore is refused.
    INDEXED: bool
    # True: backup() takes an incremental when ctx.base_index is set, and restore()
    # rebuilds a point from ctx.chain; False: the executor takes fulls and refuses chains.
    INCREMENTAL: bool

    def available(self, env: Mapping[str, str]) -> bool: ...

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]: ...

    def backup(self, options: Mapping[str, Any], sink: Sink, ctx: JobContext) -> Facts: ...

    def restore(
        self, options: Mapping[str, Any], source: Source, target: str, overwrite: bool, ctx: JobContext
    ) -> Facts: ...

    def scratch_target(self, options: Mapping[str, Any], ctx: JobContext) -> AbstractContextManager[str]: ...

    def compare(self, expected: Facts, actual: Facts) -> list[str]: ...


def require_mapping(options: Any) -> Mapping[str, Any]:
    if not isinstance(options, Mapping):
        raise InvalidOptions("plugin options must be a JSON object")
    return options


def reject_unknown(options: Mapping[str, Any], allowed: set[str]) -> None:
    """Unknown keys are typos or options meant for another plugin: refuse them."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidOptions(f"unknown option(s) {', '.join(unknown)}")


def compare_counts(expected: Mapping[str, Any], actual: Mapping[str, Any], what: str) -> list[str]:
    """Differences between two {name: count} maps, one line each."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            problems.append(f"{what} {name}: expected {expected.get(name)}, restored {actual.get(name)}")
    return problems
