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
