"""Representations of the catalog in the public API (/api/v1/); the error shape is core/api/errors.py.

Read-only: the catalog changes through agents, the scheduler and requests,
never by a PUT. Every related object is named by what an integration knows it
by — an application by slug, an agent by host name, a policy by name — or by
id when it has its own endpoint (clients, backups, jobs).
"""

from __future__ import annotations

from rest_framework import serializers

from catalog.choices import ErrorClass, Verification
from catalog.models import Alert, Application, Backup, BackupClient, Job


class ApplicationSerializer(serializers.ModelSerializer):
    cost_center = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Application
        fields = ("id", "slug", "name", "cost_center", "description", "created_at")
        read_only_fields = fields


class ClientSerializer(serializers.ModelSerializer):
    """A protected workload with its protection status (``ClientViewSet`` annotates the last two)."""

    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="hostname", read_only=True, allow_null=True)
    policy = serializers.SlugRelatedField(slug_field="name", read_only=True)
    options = serializers.DictField(read_only=True)
    last_backup_at = serializers.DateTimeField(
        source="last_good_at", read_only=True, allow_null=True, help_text="The last available backup."
    )
    rpo_met = serializers.BooleanField(
        read_only=True, help_text="The last available backup is younger than the policy's RPO."
    )

    class Meta:
        model = BackupClient
        fields = (
            "id",
            "application",
            "name",
            "hostname",
            "agent",
            "plugin",
            "options",
            "policy",
            "status",
            "next_backup_at",
            "created_at",
            "last_backup_at",
            "rpo_met",
        )
        read_only_fields = fields


class BackupSerializer(serializers.ModelSerializer):
    application = serializers.SlugRelatedField(source="client.application", slug_field="slug", read_only=True)
    storage_target = serializers.SlugRelatedField(slug_field="name", read_only=True)
    # Declared: a read-only model field loses allow_blank, and "" (not verified yet) must be in the schema.
    verification = serializers.ChoiceField(choices=Verification.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Backup
        fields = (
            "id",
            "client",
            "application",
            "job",
            "status",
            "taken_at",
            "expires_at",
            "size_bytes",
            "stored_size_bytes",
            "storage_target",
            "compression",
            "sha256",
            "verified_at",
            "verification",
            "legal_hold",
        )
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="hostname", read_only=True)
    error = serializers.CharField(source="error_message", read_only=True)
    error_class = serializers.ChoiceField(choices=ErrorClass.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Job
        fields = (
            "id",
            "kind",
            "state",
            "trigger",
            "attempt",
            "client",
            "agent",
            "backup",
            "created_at",
            "started_at",
            "finished_at",
            "bytes_done",
            "bytes_total",
            "error_class",
            "error",
        )
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    agent = serializers.SlugRelatedField(slug_field="hostname", read_only=True, allow_null=True)

    class Meta:
        model = Alert
        fields = (
            "id",
            "kind",
            "severity",
            "message",
            "application",
            "client",
            "agent",
            "job",
            "created_at",
            "resolved_at",
            "acknowledged_at",
        )
        read_only_fields = fields
