"""Representations of the catalog in the public API (/api/v1/), and its error shape for the schema.

Read-only: the catalog changes through agents, the scheduler and requests,
never by a PUT. Every related object is named by what an integration knows it
by — an application by slug, an agent by host name, a policy by name — or by
id when it has its own endpoint (clients, backups, jobs).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from catalog.choices import ErrorClass, Verification
from catalog.models import Alert, Application, Backup, BackupClient, Job


class ErrorSerializer(serializers.Serializer):
    """Every error: ``{"code", "detail", "errors"}`` (portal/api_errors.py)."""

    code = serializers.CharField(help_text="Machine-readable, e.g. invalid, not_found, four_eyes, throttled.")
    detail = serializers.CharField(help_text="For a person.")
    errors = serializers.DictField(
        required=False, help_text="On a 400 for invalid fields: field name → list of messages."
    )


_ERRORS = {
    400: "Invalid input: `errors` names the fields (code invalid, parse_error, reason_required).",
    401: "No credentials, or an unknown or revoked key (code not_authenticated, authentication_failed).",
    403: "Not allowed (code forbidden, four_eyes: nobody approves their own request).",
    404: "No such object, or one outside the caller's applications (code not_found).",
    409: "The object is not in a state that allows this (code invalid_transition).",
    415: "The body is not JSON (code unsupported_media_type).",
    422: "This Idempotency-Key was used with a different request (code idempotency_key_reused).",
    429: "Rate limited: retry after the seconds in Retry-After (code throttled).",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error responses an operation can give."""
    return {code: OpenApiResponse(ErrorSerializer, description=_ERRORS[code]) for code in sorted(set(codes))}


READ_ERRORS = (401, 404, 429)
LIST_ERRORS = (400, 401, 404, 429)


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
