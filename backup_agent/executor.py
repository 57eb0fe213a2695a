"""Runs one job to a report: plugin + storage + checksum, never an exception.

Whatever happens inside, `execute()` returns the body of a `complete` call:
`succeeded` with the backup's facts, or `failed` with a message for people,
its class for the portal (`error_class`, backup_agent.error_classes) and the
tail of the tools' stderr. Every report says which protocol it was written in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from backup_agent import PROTOCOL_VERSION, __version__, error_classes, plugins
from backup_agent.allow import AllowList
from backup_agent.config import Config, load
from backup_agent.context import ChainPart, JobContext, Source
from backup_agent.errors import (
    AgentError,
    ChecksumMismatch,
    ConfigError,
    InvalidOptions,
    RefusedByAgent,
    describe_os_error,
    os_error_class,
)
from backup_agent.file_index import FILE_NAME as INDEX_FILE
from backup_agent.file_index import MAX_CHAIN_DEPTH, DamagedIndex, IndexReader, IndexWriter, path_bytes
from backup_agent.jobs import BackupRef, JobSpec, parse, utc_now
from backup_agent.plugins.base import Facts, Plugin
from backup_agent.progress import Progress
from backup_agent.storage import FilesystemStorage, OnChunk, StoredData

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
            if exc.damaged:
                report["damaged"] = list(exc.damaged)
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

        with contextlib.ExitStack() as closing:
            base_index = self._incremental_base(spec, plugin, options, storage, ctx, closing)
            base = spec.base if base_index is not None else None
            # The data SHA-256 of every base, oldest first: a restore checks the chain it is sent against it.
            chain = [*base_index.meta["chain"], base.sha256.lower()] if base and base_index else []
            level = "incremental" if chain else "full"
            ctx.staging(storage.partial_dir(spec.destination))
            index: dict[str, Any] | None = None
            with storage.open_writer(spec.destination, plugin.DATA_NAME, on_chunk) as writer:
                # The index is written in the same pass as the data, beside it in the
                # partial folder: it is committed with the data or removed with it.
                if getattr(plugin, "INDEXED", False):
                    out = writer.open_side_file(INDEX_FILE)
                    ctx.index = IndexWriter(out, kind=plugin.NAME, level=level, depth=len(chain), chain=chain)
                ctx.base_index = base_index
                try:
                    facts = plugin.backup(options, writer, ctx)
                    ctx.check_cancelled()
                    if ctx.index is not None:
                        index = ctx.index.close()
                finally:
                    ctx.index = None
                    ctx.base_index = None
                stored = writer.finish()
                manifest = self._manifest(spec, options, stored, started, base, facts)
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
            "level": level,
            "base": None if base is None else base.id,
            "manifest": manifest,
        }
        if index is not None:
            report["index"] = index
        return report

    def _manifest(
        self,
        spec: JobSpec,
        options: dict[str, Any],
        stored: StoredData,
        started: str,
        base: BackupRef | None,
        facts: Facts,
    ) -> dict[str, Any]:
        """manifest.json, also sent as the report's ``manifest``."""
        on = None if base is None else {"id": base.id, "location": base.location, "sha256": base.sha256}
        return {
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
            "level": "full" if base is None else "incremental",
            "base": on,
            "facts": facts,
        }

    @staticmethod
    def _incremental_base(
        spec: JobSpec,
        plugin: Plugin,
        options: dict[str, Any],
        storage: FilesystemStorage,
        ctx: JobContext,
        closing: contextlib.ExitStack,
    ) -> IndexReader | None:
        """The base's index when this backup can be an incremental; None: take a full (the log says why)."""
        if spec.level != "incremental":
            if spec.level_reason:
                ctx.note(f"taking a full backup: {spec.level_reason}")
            return None
        try:
            fh, reader = _open_base(spec, plugin, options, storage)
        except _FullInstead as exc:
            ctx.note(f"taking a full backup: {exc}")
            return None
        closing.callback(fh.close)
        assert spec.base is not None
        ctx.note(f"incremental on {spec.base.location} (chain depth {reader.meta['depth'] + 1})")
        return reader

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
        """Verify the stored files' SHA-256 end to end, then (second pass) restore them.

        The target is not touched until the first pass has matched, so a
        damaged backup never half-overwrites anything. An incremental point has
        its whole chain verified first, and its index (see _chain_index).
        """
        storage = FilesystemStorage.from_job(spec.storage)
        chain = spec.chain

        def on_chunk(n: int) -> None:
            ctx.check_cancelled()
            progress.add(n)

        with contextlib.ExitStack() as closing:
            closing.callback(setattr, ctx, "point_index", None)
            closing.callback(setattr, ctx, "chain", ())
            if chain or backup.level == "incremental":
                if not getattr(plugin, "INCREMENTAL", False):
                    raise InvalidOptions(f"{plugin.NAME}: this plugin restores full backups only")
                fh, ctx.point_index = _chain_index(storage, backup, chain)
                closing.callback(fh.close)
            progress.phase(_total(ref.stored_size for ref in (*chain, backup)))
            verified = _verify_all(storage, backup, chain, on_chunk, ctx)
            progress.phase(_total(ref.size for ref in (*chain, backup)))
            # A base's origin: how many points back from this one it is.
            ctx.chain = tuple(
                ChainPart(ref.location, len(chain) - i, _opener(storage, ref, *where, on_chunk))
                for i, (ref, where) in enumerate(zip(chain, verified, strict=False))
            )
            path, compression = verified[-1]
            with storage.open_reader(path, compression, backup.sha256, on_chunk) as reader:
                facts = plugin.restore(options, reader, target, overwrite, ctx)
                with _damaging(backup.location):
                    reader.finish()
        return facts


class _FullInstead(Exception):
    """Why a planned incremental is taken as a full; the job's log says it."""


def _open_base(
    spec: JobSpec, plugin: Plugin, options: dict[str, Any], storage: FilesystemStorage
) -> tuple[BinaryIO, IndexReader]:
    """The base's index, opened, when it is one this backup can build on; else _FullInstead says why.

    Nothing of the base's data is read (that would cost what the incremental
    saves): its file must be there, its index must be the one the catalog recorded.
    """
    base = spec.base
    if not getattr(plugin, "INCREMENTAL", False):
        raise _FullInstead(f"the {plugin.NAME} plugin takes full backups only")
    if base is None or not base.sha256:
        raise _FullInstead("the job names no base to build on")
    if not base.manifest:
        raise _FullInstead(f"the catalog sent no manifest of the base {base.location}")
    if base.manifest.get("plugin") != spec.plugin:
        raise _FullInstead(f"the base {base.location} was taken by another plugin")
    try:
        same_options = plugin.validate(base.manifest.get("options") or {}) == options
    except AgentError:
        same_options = False
    if not same_options:
        raise _FullInstead(f"the base {base.location} was taken with other options")
    try:
        storage.locate(base.location)
    except AgentError as exc:
        raise _FullInstead(f"the base's data is missing: {exc}") from None
    if base.index is None:
        raise _FullInstead(f"the catalog has no file list of the base {base.location}")
    try:
        fh = storage.open_side_file(base.location, INDEX_FILE, base.index["sha256"], base.index["size"])
    except AgentError as exc:
        raise _FullInstead(f"the base's {INDEX_FILE} cannot be used ({exc})") from None
    try:
        reader = IndexReader(fh)
        depth, chain = reader.meta.get("depth"), reader.meta.get("chain")
        if reader.format < 2:
            raise _FullInstead(
                f"the base's index is format {reader.format} (taken before incremental backups)"
            )
        if type(depth) is not int or not isinstance(chain, list) or len(chain) != depth:
            raise _FullInstead("the base's index records no valid chain")
        if depth >= MAX_CHAIN_DEPTH:
            raise _FullInstead(f"the chain already holds {MAX_CHAIN_DEPTH} incrementals (the most)")
    except DamagedIndex as exc:
        fh.close()
        raise _FullInstead(f"the base's index is damaged ({exc})") from None
    except BaseException:
        fh.close()
        raise
    return fh, reader


def _chain_index(
    storage: FilesystemStorage, backup: BackupRef, chain: tuple[BackupRef, ...]
) -> tuple[BinaryIO, IndexReader]:
    """The point's own index, checked against the catalog, and the chain the portal sent against it.

    The index records the data SHA-256 of every base (its footer's ``chain``): a
    chain that differs (another member, one missing, one too many) is refused
    before anything is read, naming the first member that differs.
    """
    if not chain:
        raise InvalidOptions(f"the incremental point {backup.location} came without its chain")
    if backup.index is None:
        raise InvalidOptions(f"the incremental point {backup.location} came without its index record")
    with _damaging(backup.location):
        fh = storage.open_side_file(backup.location, INDEX_FILE, backup.index["sha256"], backup.index["size"])
    try:
        reader = IndexReader(fh)
        recorded = reader.meta.get("chain") if reader.format >= 2 else None
        if not isinstance(recorded, list):
            raise ChecksumMismatch(f"{backup.location}/{INDEX_FILE} records no chain", "a chain", "none")
        sent = [ref.sha256.lower() for ref in chain]
        for i in range(max(len(sent), len(recorded))):
            mine = str(recorded[i]) if i < len(recorded) else "no member"
            theirs = sent[i] if i < len(sent) else "no member"
            if mine != theirs:
                where = chain[i].location if i < len(chain) else f"member {i + 1}"
                error = ChecksumMismatch(
                    f"chain member {where} is not the base {backup.location} was taken on", mine, theirs
                )
                # The member may be sound; the point cannot be rebuilt from what the catalog says.
                error.damaged = (backup.location,)
                raise error
    except DamagedIndex as exc:
        fh.close()
        error = AgentError(
            f"checksum mismatch: {backup.location}/{INDEX_FILE} cannot be read ({exc})",
            error_class=ChecksumMismatch.error_class,
        )
        error.damaged = (backup.location,)
        raise error from None
    except BaseException:
        fh.close()
        raise
    return fh, reader


def _verify_all(
    storage: FilesystemStorage,
    backup: BackupRef,
    chain: tuple[BackupRef, ...],
    on_chunk: OnChunk,
    ctx: JobContext,
) -> list[tuple[Path, str]]:
    """Hash every member's data, the point's last; each one's data file and compression."""
    verified = []
    for ref in (*chain, backup):
        # In a chain, the message names the member that failed: the portal marks that one.
        label = (ref.location if ref is backup else f"chain member {ref.location}") if chain else None
        with _damaging(ref.location):
            verified.append(storage.verify(ref.location, ref.sha256, on_chunk, label=label))
        ctx.note(f"checksum verified: {ref.location}")
    return verified


def _opener(
    storage: FilesystemStorage, ref: BackupRef, path: Path, compression: str, on_chunk: OnChunk
) -> Any:
    """Opens a verified chain member's stream; closing it re-checks the SHA-256 of what was read."""

    @contextlib.contextmanager
    def stream() -> Iterator[Source]:
        with storage.open_reader(path, compression, ref.sha256, on_chunk) as reader:
            yield reader
            with _damaging(ref.location):
                reader.finish()

    return stream


@contextlib.contextmanager
def _damaging(location: str) -> Iterator[None]:
    """A checksum mismatch in here names ``location`` as damaged (the report's ``damaged``)."""
    try:
        yield
    except ChecksumMismatch as exc:
        exc.damaged = exc.damaged or (location,)
        raise


def _total(sizes: Any) -> int | None:
    values = list(sizes)
    return None if any(type(v) is not int for v in values) else sum(values)
