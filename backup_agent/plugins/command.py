"""The `command` plugin: an admin-defined program whose stdout is the backup.

Options: {"backup_argv": ["/usr/local/bin/export-app", "--job", "{job_id}"],
          "restore_argv": ["/usr/local/bin/import-app", "--into", "{target}"]}

Each argv element may contain the placeholders {job_id} and {client} (and
{target} in restore_argv); they are substituted inside that one element and
never split it, and no shell ever sees the result. The program itself (argv[0])
takes no placeholder. Backup: the program's stdout is the stream. Restore: the
stream is the program's stdin; BACKUP_AGENT_TARGET, BACKUP_AGENT_OVERWRITE (0/1)
and BACKUP_AGENT_JOB_ID are in its environment, and it must honour overwrite.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import InvalidOptions
from backup_agent.plugins.base import Facts, reject_unknown, require_mapping
from backup_agent.process import run_tool

NAME = "command"
DATA_NAME = "data.bin"
INDEXED = False
INCREMENTAL = False  # every backup is a full
_BACKUP_KEYS = frozenset({"job_id", "client"})
_RESTORE_KEYS = frozenset({"job_id", "client", "target"})


def available(env: Mapping[str, str]) -> bool:
    return True  # the program is checked when a job runs it


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    options = require_mapping(options)
    reject_unknown(options, {"backup_argv", "restore_argv"})
    result = {"backup_argv": _check_argv(options.get("backup_argv"), "backup_argv", _BACKUP_KEYS)}
    if options.get("restore_argv") is not None:
        result["restore_argv"] = _check_argv(options["restore_argv"], "restore_argv", _RESTORE_KEYS)
    return result


def _check_argv(argv: Any, what: str, keys: frozenset[str]) -> list[str]:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidOptions(f"command: '{what}' must be a non-empty list of strings")
    if not argv[0] or _fields(argv[0]):
        raise InvalidOptions(f"command: {what}[0] must name a program, without placeholders")
    for arg in argv:
        if "\0" in arg:
            raise InvalidOptions(f"command: {what} contains a NUL byte")
        unknown = _fields(arg) - keys
        if unknown:
            raise InvalidOptions(
                f"command: {what} uses unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(keys)}"
            )
    return list(argv)


def _fields(arg: str) -> set[str]:
    """Placeholder names in one element; only bare {name} is accepted.

    Attribute access, indexing, conversions and format specs ({target.__class__},
    {0}, {x!r}, {x:>10}) are refused: str.format can reach object internals.
    """
    try:
        parsed = list(string.Formatter().parse(arg))
    except ValueError as exc:
        raise InvalidOptions(f"command: bad placeholder in {arg!r}: {exc}") from None
    names = set()
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise InvalidOptions(f"command: placeholder {{{field}}} in {arg!r} must be a bare name")
        names.add(field)
    return names


def expand(argv: list[str], values: Mapping[str, str]) -> list[str]:
    """Substitute placeholders element by element: one element stays one argument."""
    return [arg.format_map(values) for arg in argv]


def backup(options: Mapping[str, Any], sink: Sink, ctx: JobContext) -> Facts:
    opts = validate(options)
    argv = expand(opts["backup_argv"], {"job_id": str(ctx.job_id), "client": ctx.client})
    run_tool(argv, ctx, stdout=sink)
    return {"program": argv[0]}


def restore(
    options: Mapping[str, Any], source: Source, target: str, overwrite: bool, ctx: JobContext
) -> Facts:
    opts = validate(options)
    if "restore_argv" not in opts:
        raise InvalidOptions("command: this client has no 'restore_argv'")
    if not isinstance(target, str) or not target or "\0" in target:
        raise InvalidOptions(f"command: bad restore target {target!r}")
    argv = expand(opts["restore_argv"], {"job_id": str(ctx.job_id), "client": ctx.client, "target": target})
    env = {
        **ctx.env,
        "BACKUP_AGENT_TARGET": target,
        "BACKUP_AGENT_OVERWRITE": "1" if overwrite else "0",
        "BACKUP_AGENT_JOB_ID": str(ctx.job_id),
    }
    run_tool(argv, ctx, stdin=source, env=env)
    return {"program": argv[0], "target": target}


def scratch_target(options: Mapping[str, Any], ctx: JobContext) -> AbstractContextManager[str]:
    return _scratch_dir(ctx)


@contextmanager
def _scratch_dir(ctx: JobContext) -> Iterator[str]:
    with tempfile.TemporaryDirectory(
        prefix=f"backup-agent-restore-test-{ctx.job_id}-", dir=ctx.scratch_dir, ignore_cleanup_errors=True
    ) as path:
        yield path


def compare(expected: Facts, actual: Facts) -> list[str]:
    return []  # an opaque stream: the restore command's exit status is the test
