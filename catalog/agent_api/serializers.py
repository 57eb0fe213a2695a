"""Agent API payloads (docs/agent-protocol.md is the contract)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import PurePosixPath

from rest_framework import serializers

from catalog.choices import BackupLevel, Compression, JobKind, Plugin
from catalog.errors import InvalidReport
from catalog.failures import AGENT_ERROR_CLASSES
from catalog.models import Backup, Job, hostname_validator
from catalog.services import chains
from catalog.services.jobs import backup_destination

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def protocol_field():
    """The protocol version the agent says it speaks (absent: 1, the original protocol)."""
    return serializers.IntegerField(min_value=1, max_value=32767, required=False, default=1)


class InstanceSerializer(serializers.Serializer):
    """Which agent instance speaks (newer agents): an id generated on the host, and its name."""

    id = serializers.RegexField(r"^[0-9a-f]{32}$", max_length=32)
    host = serializers.CharField(max_length=253)


def instance_field():
    return InstanceSerializer(required=False, allow_null=True, default=None)


class EnrolSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)
    hostname = serializers.CharField(max_length=253, validators=[hostname_validator])
    version = serializers.CharField(max_length=32, allow_blank=True, default="")
    protocol = protocol_field()
    plugins = serializers.ListField(child=serializers.ChoiceField(choices=Plugin.choices), default=list)
    instance = instance_field()


#: The most archives one poll may list: an agent's list is its own few weeks of backups.
MAX_ARCHIVES_PER_REPORT = 10_000


class PollSerializer(serializers.Serializer):
    version = serializers.CharField(max_length=32, allow_blank=True, default="")
    protocol = protocol_field()
    plugins = serializers.ListField(child=serializers.ChoiceField(choices=Plugin.choices), default=list)
    running = serializers.ListField(child=serializers.IntegerField(min_value=1), default=list)
    # The server's own allow-list (agents since 1.x); absent from older agents.
    allow = serializers.DictField(required=False, allow_null=True, default=None)
    instance = instance_field()
    # The agent's list of the archives it wrote that still exist (at its start, then hourly).
    # Absent: no report in this poll. An empty list: none exist.
    archives = serializers.ListField(
        child=serializers.DictField(), required=False, max_length=MAX_ARCHIVES_PER_REPORT
    )

    def validate_archives(self, value: list) -> list[dict]:
        entries = ArchiveSerializer(data=value, many=True)
        entries.is_valid(raise_exception=True)
        return entries.validated_data


_PLUGINS = frozenset(Plugin.values)
_INSTANCE_ID = re.compile(r"[0-9a-f]{32}")


def _plain_text(value: object, max_length: int) -> bool:
    """Text a CharField returns unchanged: printable ASCII, no surrounding blanks, short enough."""
    return (
        type(value) is str
        and len(value) <= max_length
        and value.isascii()
        and value.isprintable()
        and value == value.strip()
    )


def plain_poll(data: object) -> dict | None:
    """``PollSerializer``'s validated data for a plain, well-formed idle poll; None for anything else.

    Every agent polls every few seconds, and a DRF serializer costs more than the
    rest of an idle poll: this checks the usual body with the serializer's own
    rules, strictly (exact types, nothing to coerce or trim), and returns exactly
    what the serializer would. Whatever it does not accept (a poll listing its
    archives, a string where a number belongs, an error) goes to ``PollSerializer``,
    which decides and words the errors. tests/catalog/test_idle_poll.py holds the two equal.
    """
    if type(data) is not dict or "archives" in data:
        return None
    version = data.get("version", "")
    protocol = data.get("protocol", 1)
    plugins = data.get("plugins", [])
    running = data.get("running", [])
    allow = data.get("allow")
    instance = data.get("instance")
    if not (
        _plain_text(version, 32)
        and type(protocol) is int
        and 1 <= protocol <= 32767
        and type(plugins) is list
        and all(type(plugin) is str and plugin in _PLUGINS for plugin in plugins)
        and type(running) is list
        and all(type(job) is int and job >= 1 for job in running)
        and (allow is None or (type(allow) is dict and all(type(key) is str for key in allow)))
    ):
        return None
    if instance is not None:
        if type(instance) is not dict:
            return None
        instance_id, host = instance.get("id"), instance.get("host")
        if not (
            type(instance_id) is str
            and _INSTANCE_ID.fullmatch(instance_id)
            and _plain_text(host, 253)
            and host
        ):
            return None
        instance = {"id": instance_id, "host": host}
    return {
        "version": version,
        "protocol": protocol,
        "plugins": list(plugins),
        "running": list(running),
        "allow": None if allow is None else dict(allow),
        "instance": instance,
    }


def validated_poll(data: object) -> dict:
    """The poll's body, validated (``PollSerializer``'s data); raises ValidationError (400) like it."""
    plain = plain_poll(data)
    if plain is not None:
        return plain
    serializer = PollSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


#: The largest number of bytes the catalog stores (a BigIntegerField: PostgreSQL's bigint).
MAX_BYTES = 2**63 - 1


class ByteCountField(serializers.IntegerField):
    """A number of bytes: a JSON integer from 0 to MAX_BYTES, never a float such as 1e23 or 5.0.

    Bounded here so the database never sees a value it cannot hold (a 500);
    a float is refused rather than rounded, since a size is counted, not measured.
    """

    default_error_messages = {
        "not_whole": "Give a whole number of bytes (a JSON integer such as 1048576), not {value}.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_BYTES)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, float):
            self.fail("not_whole", value=repr(data))
        return super().to_internal_value(data)


class ProgressSerializer(serializers.Serializer):
    bytes_done = ByteCountField()
    bytes_total = ByteCountField(allow_null=True, required=False, default=None)


class ErrorClassField(serializers.Field):
    """The agent's ``error_class`` (protocol 2): a code this portal knows, else "" (absent).

    Never a validation error: a report refused with 400 stays in the agent's spool
    and is resent forever. A code this portal does not know (a newer agent) or a
    malformed value counts as absent, and the failure is classified from its text.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", "")
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> str:
        if isinstance(data, str) and data in AGENT_ERROR_CLASSES:
            return data
        logger.info("Unknown error_class %.100r from an agent: classified from the error text.", data)
        return ""

    def to_representation(self, value) -> str:
        return value


INDEX_KINDS = frozenset(("files", "postgresql", "mysql"))
#: File-list formats the portal reads: 1 (protocol 3), 2 (protocol 4: incrementals' columns). For ever.
INDEX_FORMATS = frozenset((1, 2))


class IndexReportField(serializers.Field):
    """The file list a successful backup's report announces (protocol 3), or None.

    ``{"format": 1|2, "kind": "files"|"postgresql"|"mysql", "entries", "size", "sha256"}``.
    Never a validation error, as ``ErrorClassField``: a malformed one is ``{}``, a file
    list announced but unusable (the backup is recorded without one, and its log says
    so), and the report is acknowledged.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", None)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> dict | None:
        def count(value) -> bool:
            return type(value) is int and 0 <= value <= MAX_BYTES

        if (
            isinstance(data, dict)
            and count(data.get("format"))
            and data["format"] in INDEX_FORMATS
            and data.get("kind") in INDEX_KINDS
            and count(data.get("entries"))
            and count(data.get("size"))
            and isinstance(data.get("sha256"), str)
            and SHA256_HEX.match(data["sha256"])
        ):
            return {key: data[key] for key in ("format", "kind", "entries", "size", "sha256")}
        logger.warning("A malformed index %.200r in a report: recorded without a file list.", data)
        return {}

    def to_representation(self, value):
        return value


#: The most locations a ``damaged`` list may name: a point and its bases.
MAX_DAMAGED = 256


class DamagedField(serializers.Field):
    """The chain members a failed restore or restore test found damaged (protocol 4): their locations.

    Never a validation error, as ``ErrorClassField``: a failure report refused with 400
    would be resent forever. A malformed list counts as absent (the job's point is marked).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", list)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> list[str]:
        if (
            isinstance(data, list)
            and len(data) <= MAX_DAMAGED
            and all(isinstance(item, str) and 0 < len(item) <= 1000 for item in data)
        ):
            return list(data)
        logger.warning("A malformed damaged list %.200r in a report: the job's point is marked.", data)
        return []

    def to_representation(self, value):
        return value


def relative_location(value: str) -> str:
    """A place under the storage root as the agent reports it: relative, without '..' or NUL."""
    path = PurePosixPath(value)
    if "\x00" in value or path.is_absolute() or ".." in path.parts or not value.strip():
        raise serializers.ValidationError("Give the location relative to the storage root, without '..'.")
    return value


class CompleteSerializer(serializers.Serializer):
    SUCCEEDED, FAILED = "succeeded", "failed"

    status = serializers.ChoiceField(choices=[SUCCEEDED, FAILED])
    size = ByteCountField(required=False)
    stored_size = ByteCountField(required=False)
    location = serializers.CharField(max_length=1000, required=False)
    sha256 = serializers.CharField(max_length=64, required=False)
    compression = serializers.ChoiceField(choices=Compression.choices, default=Compression.NONE)
    manifest = serializers.DictField(required=False, default=dict)
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=20_000)
    error_class = ErrorClassField()
    log_tail = serializers.CharField(required=False, allow_blank=True, default="", max_length=200_000)
    started_at = serializers.DateTimeField(required=False)
    finished_at = serializers.DateTimeField(required=False)
    index = IndexReportField()
    damaged = DamagedField()
    # Protocol 4: what the agent took. Absent (an older agent): a full.
    level = serializers.ChoiceField(choices=BackupLevel.choices, required=False)
    base = serializers.IntegerField(min_value=1, required=False, allow_null=True)

    def validate_location(self, value: str) -> str:
        return relative_location(value)

    def validate_sha256(self, value: str) -> str:
        if not SHA256_HEX.match(value):
            raise serializers.ValidationError("Give the SHA-256 as 64 lower-case hex digits.")
        return value

    def validate_manifest(self, value: dict) -> dict:
        # Stored as JSON: an overflowing number (1e400 parses as infinity) or a NUL character
        # is valid input to Python but neither SQLite's JSON nor PostgreSQL's jsonb takes it.
        pending = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, float) and not math.isfinite(item):
                raise serializers.ValidationError("Numbers in the manifest must be finite.")
            if isinstance(item, str) and "\x00" in item:
                raise serializers.ValidationError("Text in the manifest must not contain NUL characters.")
            if isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return value

    def validate(self, attrs: dict) -> dict:
        job: Job = self.context["job"]
        attrs["error_class"] = attrs.get("error_class") or ""  # null is absent too
        attrs["damaged"] = attrs.get("damaged") or []
        if attrs["status"] == self.FAILED and not attrs["error"].strip():
            raise serializers.ValidationError({"error": "Say why the job failed."})
        if attrs["status"] == self.SUCCEEDED and job.kind == JobKind.BACKUP:
            missing = [f for f in ("size", "stored_size", "location", "sha256") if f not in attrs]
            if missing:
                raise serializers.ValidationError(dict.fromkeys(missing, "Required for a successful backup."))
            assigned = backup_destination(job)
            if attrs["location"] != assigned:
                raise serializers.ValidationError(
                    {
                        "location": f"This job's backup belongs at {assigned!r}, the destination it was "
                        f"given; {attrs['location']!r} is not accepted."
                    }
                )
            attrs["level"] = attrs.get("level") or BackupLevel.FULL
            try:
                # An incremental the job was not planned, or on another base: an agent bug, never recorded.
                chains.check_report(job, attrs["level"], attrs.get("base"))
            except InvalidReport as exc:
                raise serializers.ValidationError(exc.errors) from None
        return attrs


def job_payload(job: Job, chain: list[Backup] | None = None) -> dict:
    """What an agent needs to run ``job``: nothing more (no other tenant's data).

    ``chain``: a restore's or restore test's bases, oldest first, when the caller read them
    already (``job_payloads``); else read here.
    """
    client = job.client
    storage = (job.backup or client.policy).storage_target
    payload = {
        "id": job.pk,
        "kind": job.kind,
        "attempt": job.attempt,
        "lease_expires_at": job.lease_expires_at,
        "client": {
            "id": client.pk,
            "name": client.name,
            "application": client.application.slug,
            "plugin": client.plugin,
            "options": client.options,
        },
        "storage": {"kind": storage.kind, "root": storage.location, "compression": storage.compression},
        "destination": None,
        "backup": None,
        "target": None,
    }
    if job.kind == JobKind.BACKUP:
        payload["destination"] = backup_destination(job)
        # Protocol 4: planned at the claim (catalog/services/chains.py); an older agent ignores them.
        incremental = job.level == BackupLevel.INCREMENTAL and job.base_id is not None
        payload["level"] = BackupLevel.INCREMENTAL if incremental else BackupLevel.FULL
        payload["level_reason"] = job.level_reason
        payload["base"] = point_payload(job.base) if incremental else None
    if job.backup is not None:
        payload["backup"] = point_payload(job.backup)
    if job.kind in (JobKind.RESTORE, JobKind.RESTORE_TEST):
        if chain is None:
            chain = chains.chain_of(job.backup)
        payload["chain"] = [point_payload(member) for member in chain]
    if job.kind == JobKind.RESTORE:
        # paths (protocol 3): a selective restore's files, folders or tables; empty: everything.
        payload["target"] = {
            "location": job.target_location,
            "overwrite": job.overwrite,
            "paths": list(job.paths or []),
        }
    return payload


def job_payloads(claimed: list[Job]) -> list[dict]:
    """``job_payload`` of each claimed job; the chains of the restores among them read in one query."""
    restored = [job.backup for job in claimed if job.kind in (JobKind.RESTORE, JobKind.RESTORE_TEST)]
    chain_of = chains.chains_of(restored)
    return [
        job_payload(job, chain=chain_of.get(job.backup_id) if job.backup_id else None) for job in claimed
    ]


def point_payload(backup: Backup) -> dict:
    """A recovery point as an agent reads it: where its data is, its checksum, level and file list."""
    return {
        "id": backup.pk,
        "location": backup.location,
        "sha256": backup.sha256,
        "size": backup.size_bytes,
        "stored_size": backup.stored_size_bytes,
        "compression": backup.compression,
        "manifest": backup.manifest,
        "level": backup.level,
        "index": (
            {"sha256": backup.index_sha256, "size": backup.index_size_bytes} if backup.has_file_list else None
        ),
    }


class ArchiveSerializer(serializers.Serializer):
    """One archive in a poll's ``archives``: where the agent wrote it (its job's destination), its size."""

    location = serializers.CharField(max_length=1000, trim_whitespace=False)
    size = ByteCountField()

    def validate_location(self, value: str) -> str:
        value = relative_location(value)  # the complete report's rule
        # Exactly as handed out (no "./", "//" or trailing "/"): matched against Backup.location
        # as a string, a spelling variant of a live backup's folder would look like an orphan.
        if str(PurePosixPath(value)) != value:
            raise serializers.ValidationError(
                f"Give the location exactly as the job's destination, e.g. {str(PurePosixPath(value))!r}."
            )
        return value
