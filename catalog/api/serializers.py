"""Agent API payloads (docs/agent-protocol.md is the contract)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from rest_framework import serializers

from catalog.choices import Compression, JobKind, Plugin
from catalog.models import Job, hostname_validator

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class EnrolSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)
    hostname = serializers.CharField(max_length=253, validators=[hostname_validator])
    version = serializers.CharField(max_length=32, allow_blank=True, default="")
    plugins = serializers.ListField(child=serializers.ChoiceField(choices=Plugin.choices), default=list)


class PollSerializer(serializers.Serializer):
    version = serializers.CharField(max_length=32, allow_blank=True, default="")
    plugins = serializers.ListField(child=serializers.ChoiceField(choices=Plugin.choices), default=list)
    running = serializers.ListField(child=serializers.IntegerField(min_value=1), default=list)


class ProgressSerializer(serializers.Serializer):
    bytes_done = serializers.IntegerField(min_value=0)
    bytes_total = serializers.IntegerField(min_value=0, allow_null=True, required=False, default=None)


class CompleteSerializer(serializers.Serializer):
    SUCCEEDED, FAILED = "succeeded", "failed"

    status = serializers.ChoiceField(choices=[SUCCEEDED, FAILED])
    size = serializers.IntegerField(min_value=0, required=False)
    stored_size = serializers.IntegerField(min_value=0, required=False)
    location = serializers.CharField(max_length=1000, required=False)
    sha256 = serializers.CharField(max_length=64, required=False)
    compression = serializers.ChoiceField(choices=Compression.choices, default=Compression.NONE)
    manifest = serializers.DictField(required=False, default=dict)
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=20_000)
    log_tail = serializers.CharField(required=False, allow_blank=True, default="", max_length=200_000)
    started_at = serializers.DateTimeField(required=False)
    finished_at = serializers.DateTimeField(required=False)

    def validate_location(self, value: str) -> str:
        path = PurePosixPath(value)
        if "\x00" in value or path.is_absolute() or ".." in path.parts or not value.strip():
            raise serializers.ValidationError("Give the location relative to the storage root, without '..'.")
        return value

    def validate_sha256(self, value: str) -> str:
        if not SHA256_HEX.match(value):
            raise serializers.ValidationError("Give the SHA-256 as 64 lower-case hex digits.")
        return value

    def validate(self, attrs: dict) -> dict:
        job: Job = self.context["job"]
        if attrs["status"] == self.FAILED and not attrs["error"].strip():
            raise serializers.ValidationError({"error": "Say why the job failed."})
        if attrs["status"] == self.SUCCEEDED and job.kind == JobKind.BACKUP:
            missing = [f for f in ("size", "stored_size", "location", "sha256") if f not in attrs]
            if missing:
                raise serializers.ValidationError(dict.fromkeys(missing, "Required for a successful backup."))
        return attrs


def job_payload(job: Job) -> dict:
    """What an agent needs to run ``job``: nothing more (no other tenant's data)."""
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
        payload["destination"] = f"{client.application.slug}/{client.name}/job-{job.pk}"
    if job.backup is not None:
        backup = job.backup
        payload["backup"] = {
            "id": backup.pk,
            "location": backup.location,
            "sha256": backup.sha256,
            "size": backup.size_bytes,
            "stored_size": backup.stored_size_bytes,
            "compression": backup.compression,
            "manifest": backup.manifest,
        }
    if job.kind == JobKind.RESTORE:
        payload["target"] = {"location": job.target_location, "overwrite": job.overwrite}
    return payload
