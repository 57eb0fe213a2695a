"""The REST API's contract: the fields each representation has, exactly.

A plain module, not a test module: the endpoint tests and the schema test import from here.
"""

from __future__ import annotations

RESTORE_REQUEST_FIELDS = {
    "id",
    "status",
    "needs_approval",
    "approval_rule",
    "backup",
    "target_agent",
    "target_location",
    "overwrite",
    "paths",
    "reason",
    "external_ref",
    "job",
    "error",
    "created_at",
    "updated_at",
}

CLIENT_REQUEST_FIELDS = {
    "id",
    "status",
    "needs_approval",
    "approval_rule",
    "application",
    "hostname",
    "name",
    "plugin",
    "options",
    "policy",
    "justification",
    "external_ref",
    "client",
    "error",
    "created_at",
    "updated_at",
}

APPLICATION_FIELDS = {"id", "slug", "name", "cost_center", "description", "created_at"}
CLIENT_FIELDS = {
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
}
BACKUP_FIELDS = {
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
}
POLICY_FIELDS = {
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
}
JOB_FIELDS = {
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
}
ALERT_FIELDS = {
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
}
