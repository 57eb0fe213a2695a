"""Representations of the catalog in the public API (/api/v1/); the error shape is core/api/errors.py.

Read-only: the catalog changes through agents, the scheduler and requests,
never by a PUT. Every related object is named by what an integration knows it
by — an application by slug, an agent by host name, a policy by name — or by
id when it has its own endpoint (clients, backups, jobs).
"""

from __future__ import annotations

from rest_framework import serializers

from catalog.choices import BackupLevel, ErrorClass, Verification
from catalog.models import Alert, Application, Backup, BackupClient, Job, ProtectionPolicy


class ApplicationSerializer(serializers.ModelSerializer):
    cost_center = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Application
        fields = ("id", "slug", "name", "cost_center", "description", "created_at")
        read_only_fields = fields


class PolicySerializer(serializers.ModelSerializer):
    """A published service tier. ``full_every_days`` and ``full_every_backups`` both null: every
    backup is a full; otherwise files backups take incrementals between fulls (database dumps and
    custom commands are always full)."""

    full_every_days = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="A full backup when the chain's full is this many days old; null: not by age.",
    )
    full_every_backups = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="A full backup every N backups (1 full, N-1 incrementals); null: not by count.",
    )

    class Meta:
        model = ProtectionPolicy
        fields = (
            "id",
            "name",
            "description",
            "schedule",
            "rpo_hours",
            "retention_days",
            "restore_test_interval_days",
            "full_every_days",
            "full_every_backups",
            "price_per_gb_month",
            "auto_approve_clients",
        )
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
    file_list_entries = serializers.IntegerField(
        source="index_entries",
        read_only=True,
        allow_null=True,
        help_text="Entries in the point's file list (browse it at files/); null: none, restore it whole.",
    )
    level = serializers.ChoiceField(
        choices=BackupLevel.choices,
        read_only=True,
        help_text="full: the whole tree; incremental: what changed since `base`.",
    )
    base = serializers.PrimaryKeyRelatedField(
        read_only=True,
        allow_null=True,
        help_text="The recovery point an incremental builds on (its id); null for a full.",
    )
    restorable = serializers.BooleanField(
        read_only=True,
        help_text="Available, not failed verification, and (an incremental) its chain whole: its full "
        "and every point between available and not failed verification.",
    )
    suspicious = serializers.BooleanField(
        read_only=True,
        help_text="Unlike the client's history (possible ransomware or mass deletion) and not acknowledged "
        "as expected; `anomaly` holds the evidence. docs/anomalies.md.",
    )
    anomaly = serializers.JSONField(
        read_only=True,
        help_text="The anomaly check's evidence: the rules fired (`rules`, `summaries`), the point's "
        "figures, the baselines (median, MAD, robust z) and the points compared with; {} when nothing "
        "was unusual.",
    )

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
            "file_list_entries",
            "level",
            "base",
            "restorable",
            "suspicious",
            "anomaly",
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


# --- File lists (catalog/services/file_lists.py): entries come from the point's index file, not rows ---


class FileEntrySerializer(serializers.Serializer):
    """One entry of a folder in a recovery point's file list (a file, folder, link, or a table)."""

    name = serializers.CharField(help_text="The entry's name, in tar's escape quoting.")
    path = serializers.CharField(help_text="Its absolute path, as `path` and a restore's `paths` take it.")
    type = serializers.CharField(help_text="file, directory, symlink, hardlink; or table, schema…")
    size = serializers.IntegerField(allow_null=True, help_text="Bytes; null for a folder.")
    mtime = serializers.DateTimeField(allow_null=True, help_text="Last modified (UTC); null when unknown.")
    mode = serializers.CharField(allow_null=True, help_text='Permissions in octal, e.g. "0644".')
    link = serializers.CharField(allow_null=True, help_text="A link's target.")
    rows = serializers.IntegerField(allow_null=True, help_text="A table's rows when it was dumped.")


class CrumbSerializer(serializers.Serializer):
    name = serializers.CharField()
    path = serializers.CharField()


class FolderPageSerializer(serializers.Serializer):
    """A page of a folder's entries in the list envelope, with the folder and its crumbs."""

    count = serializers.IntegerField(help_text="Entries in the folder.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    path = serializers.CharField(help_text="The folder, normalised.")
    crumbs = CrumbSerializer(many=True, help_text="From / down to the folder.")
    results = FileEntrySerializer(many=True)


class FileVersionSerializer(serializers.Serializer):
    backup = serializers.IntegerField(help_text="The newest recovery point that holds this version.")
    taken_at = serializers.DateTimeField()
    type = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    mtime = serializers.DateTimeField(allow_null=True)
    points = serializers.IntegerField(help_text="How many retained recovery points hold this same version.")


class FileMatchSerializer(serializers.Serializer):
    path = serializers.CharField()
    versions = FileVersionSerializer(many=True, help_text="Newest first.")


class FileSearchPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Matching paths (on all pages).")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    truncated = serializers.BooleanField(help_text="The search stopped at its limit: narrow the name.")
    results = FileMatchSerializer(many=True)
