"""Runs one job to a report: plugin + storage + checksum, never an exception.

Whatever happens inside, `execute()` returns the body of a `complete` call:
`succeeded` with the backup's facts, or `failed` with a message for people,
its class for the portal (`error_class`, backup_agent.error_classes) and the
tail of the tools' stderr. Every report says which protocol it was written in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from backup_agent import PROTOCOL_VERSION, __version__, error_classes, plugins
from backup_agent.allow import AllowList
from backup_agent.config import Config, load
from backup_agent.context import JobContext
from backup_agent.errors import (
    AgentError,
    ConfigError,
    InvalidOptions,
    RefusedByAgent,
    describe_os_error,
    os_error_class,
)
from backup_agent.file_index import FILE_NAME as INDEX_FILE
from backup_agent.file_index import IndexWriter, path_bytes
from backup_agent.jobs import BackupRef, JobSpec, parse, utc_now
from backup_agent.plugins.base import Facts, Plugin
from backup_agent.progress import Progress
from backup_agent.storage import FilesystemStorage

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
Report = dict[str, Any]


def new_context(raw: dict[str, Any], config: Config) -> JobContext:
    """The context for a raw job, built before parsing so even a bad job can be cancelled."""
    client = raw.get("client") if isinstance(raw.get("client"), dict) else {}
    plugin_env = config.plugin_env.get(str(client.get("plugin") or ""), {})
    return JobContext(
        job_id=int(raw["id"]),
        client=str(client.get("name") or ""),
        env={**os.environ, **plugin_env},
        tool_timeout=config.tool_timeout,
        scratch_dir=config.scratch_dir,
    )


def selection_of(paths: tuple[str, ...]) -> tuple[bytes, ...] | None:
    """A restore's ``target.paths`` (absolute, tar-escaped text) as bytes relative to ``/``.

    None (everything) when there are none, or when one of them is ``/`` itself.
    InvalidOptions for a path that is not absolute, holds NUL, a malformed
    escape, or a ``.`` or ``..`` component: the selection names archive
    members exactly, it is never resolved.
    """
    selected: list[bytes] = []
    for text in paths:
        try:
            raw = path_bytes(text) if isinstance(text, str) else b""
        except ValueError as exc:
            raise InvalidOptions(f"restore path {text!r}: {exc}") from None
        if not raw.startswith(b"/") or b"\0" in raw:
            raise InvalidOptions(f"restore path {text!r} is not an absolute path")
        parts = [part for part in raw.split(b"/") if part]
        if any(part in (b".", b"..") for part in parts):
            raise InvalidOptions(f"restore path {text!r} holds a '.' or '..' component")
        if not parts:
            return None  # "/": the whole backup
        rel = b"/".join(parts)
        if rel not in selected:
            selected.append(rel)
    return tuple(selected) or None


def index_path(raw: dict[str, Any], report: Report) -> Path | None:
    """Where a successful backup's report says its index is (None: it has none).

    The run loop keeps this path with the spooled report, to upload the index
    before the report (docs/agent-protocol.md).
    """
    if report.get("status") != "succeeded" or not isinstance(report.get("index"), dict):
        return None
    location = report.get("location")
    if not isinstance(location, str):
        return None
    try:
        return FilesystemStorage.from_job(raw.get("storage")).job_dir(location) / INDEX_FILE
    except AgentError:
        return None


def failed(error: str, error_class: str) -> Report:
    """The start of a failed report: the message people read and the code the portal trusts."""
    return {"status": "failed", "error": error, "error_class": error_class}


class Executor:
    def __init__(self, config: Config, config_file: Path | None = None) -> None:
        self.config = config
        # When set, the allow-list is re-read from this file before every job:
        # the file on the server is the authority, and `backup-agent allow`
        # takes effect without a restart.
        self.config_file = config_file

    def allow_list(self) -> AllowList:
        """The allow-list as it is now; RefusedByAgent when the config file cannot be read."""
        if self.config_file is None:
            return self.config.allow
        try:
            return load(self.config_file).allow
        except ConfigError as exc:
            # Fail closed: a broken config must not fall back to a stale, wider list.
            raise RefusedByAgent(f"cannot read this server's allow-list: {exc}") from None

    def admit(self, spec: JobSpec, ctx: JobContext) -> JobSpec:
        """Check the job against the allow-list before any storage or plugin code touches data.

        The plugin's validate() runs first: it only checks and normalises the
        options (no I/O), so the allow-list judges exactly what will run.
        """
        if spec.kind != "expire":
            spec = dataclasses.replace(spec, options=plugins.get(spec.plugin).validate(spec.options))
        permit = self.allow_list().check_job(spec)
        ctx.restore_only_under = permit.restore_only_under
        return spec

    def execute(self, raw: dict[str, Any], ctx: JobContext, progress: Progress) -> dict[str, Any]:
        started = utc_now()
        try:
            ctx.check_cancelled()  # stopped while waiting for a free slot
            spec = self.admit(parse(raw), ctx)
            handler = {
                "backup": self._backup,
                "restore": self._restore,
                "restore_test": self._restore_test,
                "expire": self._expire,
            }[spec.kind]
            report: dict[str, Any] = {"status": "succeeded", **handler(spec, ctx, progress, started)}
        except AgentError as exc:
            report = failed(str(exc), exc.error_class)
        except OSError as exc:
            report = failed(describe_os_error(exc), os_error_class(exc))
        except Exception as exc:  # a bug must still end in a report, not a dead thread
            log.exception("job %s: unexpected error", ctx.job_id)
            report = failed(f"agent error: {type(exc).__name__}: {exc}", error_classes.UNKNOWN)
        if report["status"] == "failed":
            log.warning("job %s failed (%s): %s", ctx.job_id, report["error_class"], report["error"])
        # The protocol goes into the report, not the request: a spooled report
        # is resent as it was written, whatever agent version resends it.
        report.update(
            started_at=started, finished_at=utc_now(), log_tail=ctx.log.text(), protocol=PROTOCOL_VERSION
        )
        return report

    # --- one method per job kind -------------------------------------------------

    def _backup(self, spec: JobSpec, ctx: JobContext, progress: Progress, started: str) -> Report:
        plugin = plugins.get(spec.plugin)
        options = plugin.validate(spec.options)
        storage = FilesystemStorage.from_job(spec.storage)
        assert spec.destination is not None  # parse() checked it

        def on_chunk(n: int) -> None:
            ctx.check_cancelled()
            progress.add(n)

        ctx.staging(storage.partial_dir(spec.destination))
        index: dict[str, Any] | None = None
        with storage.open_writer(spec.destination, plugin.DATA_NAME, on_chunk) as writer:
            # The index is written in the same pass as the data, beside it in the
            # partial folder: it is committed with the data or removed with it.
            if getattr(plugin, "INDEXED", False):
                ctx.index = IndexWriter(writer.open_side_file(INDEX_FILE), kind=plugin.NAME)
            try:
                facts = plugin.backup(options, writer, ctx)
                ctx.check_cancelled()
                if ctx.index is not None:
                    index = ctx.index.close()
            finally:
                ctx.index = None
            stored = writer.finish()
            manifest = {
                "format": MANIFEST_FORMAT,
                "job_id": spec.id,
                "attempt": spec.attempt,
                "client": {"id": spec.client_id, "name": spec.client_name, "application": spec.application},
                "plugin": spec.plugin,
                "options": options,
                "data_file": stored.data_file,
                "size": stored.size,
                "stored_size": stored.stored_size,
                "sha256": stored.sha256,
                "compression": stored.compression,
                "started_at": started,
                "finished_at": utc_now(),
                "agent": {"hostname": self.config.hostname, "version": __version__},
                "facts": facts,
            }
            if index is not None:
                manifest["index"] = index
            writer.commit(manifest)
        # In place: recorded as this agent's, so that it can be found again if
        # its report never reaches the catalog (backup_agent/archives.py).
        ctx.archived(str(storage.root), spec.destination)
        report: Report = {
            "size": stored.size,
            "stored_size": stored.stored_size,
            "location": spec.destination,
            "sha256": stored.sha256,
            "compression": stored.compression,
            "manifest": manifest,
        }
        if index is not None:
            report["index"] = index
        return report

    def _restore(self, spec: JobSpec, ctx: JobContext, progress: Progress, started: str) -> Report:
        plugin = plugins.get(spec.plugin)
        options = plugin.validate(spec.options)
        assert spec.backup is not None and spec.target is not None
        ctx.selection = selection_of(spec.paths)
        if ctx.selection is not None and not getattr(plugin, "INDEXED", False):
            raise InvalidOptions(f"{plugin.NAME}: this plugin cannot restore single paths, only everything")
        facts = self._verified_restore(
            spec.backup, plugin, options, spec, spec.target, spec.overwrite, ctx, progress
        )
        return {"manifest": {"restored_to": spec.target, "sha256": spec.backup.sha256, "facts": facts}}

    def _restore_test(self, spec: JobSpec, ctx: JobContext, progress: Progress, started: str) -> Report:
        """Restore into a throw-away target and compare with what the backup recorded."""
        plugin = plugins.get(spec.plugin)
        options = plugin.validate(spec.options)
        assert spec.backup is not None
        # The portal's copy of the manifest first: it came with the report, so
        # whoever can write the storage cannot also rewrite what we expect.
        manifest = spec.backup.manifest or FilesystemStorage.from_job(spec.storage).read_manifest(
            spec.backup.location
        )
        expected = manifest.get("facts")
        with plugin.scratch_target(options, ctx) as scratch:
            facts = self._verified_restore(spec.backup, plugin, options, spec, scratch, False, ctx, progress)
        if not expected:
            ctx.note("the backup has no manifest facts: checksum and restore verified, contents not compared")
            differences = []
        else:
            differences = plugin.compare(expected, facts)
        if differences:
            raise AgentError("restore test mismatch: " + "; ".join(differences[:10]))
        return {"manifest": {"sha256": spec.backup.sha256, "facts": facts, "compared": bool(expected)}}

    def _expire(self, spec: JobSpec, ctx: JobContext, progress: Progress, started: str) -> Report:
        assert spec.backup is not None
        existed = FilesystemStorage.from_job(spec.storage).expire(spec.backup.location)
        if not existed:
            ctx.note(f"{spec.backup.location} was already gone")
        return {"manifest": {"expired": spec.backup.location, "existed": existed}}

    @staticmethod
    def _verified_restore(
        backup: BackupRef,
        plugin: Plugin,
        options: dict[str, Any],
        spec: JobSpec,
        target: str,
        overwrite: bool,
        ctx: JobContext,
        progress: Progress,
    ) -> Facts:
        """Verify the stored file's SHA-256 end to end, then (second pass) restore it.

        The target is not touched until the first pass has matched, so a
        damaged backup never half-overwrites anything.
        """
        storage = FilesystemStorage.from_job(spec.storage)

        def on_chunk(n: int) -> None:
            ctx.check_cancelled()
            progress.add(n)

        progress.phase(backup.stored_size)
        path, compression = storage.verify(backup.location, backup.sha256, on_chunk)
        ctx.note(f"checksum verified: {backup.location}")
        progress.phase(backup.size)
        with storage.open_reader(path, compression, backup.sha256, on_chunk) as reader:
            facts = plugin.restore(options, reader, target, overwrite, ctx)
            reader.finish()
        return facts
