"""States and kinds of the catalog. No state string literal appears anywhere else."""

from django.db import models


class Plugin(models.TextChoices):
    FILES = "files", "Files (tar)"
    POSTGRESQL = "postgresql", "PostgreSQL (pg_dump)"
    MYSQL = "mysql", "MySQL / MariaDB (mysqldump)"
    COMMAND = "command", "Custom command"


class StorageKind(models.TextChoices):
    FILESYSTEM = "filesystem", "Filesystem (mounted on the agents)"
    S3 = "s3", "S3 object storage"


class Compression(models.TextChoices):
    NONE = "none", "None"
    GZIP = "gzip", "gzip"


class ClientStatus(models.TextChoices):
    """pending_enrolment → active ⇄ paused → retired."""

    PENDING_ENROLMENT = "pending_enrolment", "Pending enrolment"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    RETIRED = "retired", "Retired"


class JobKind(models.TextChoices):
    BACKUP = "backup", "Backup"
    RESTORE = "restore", "Restore"
    RESTORE_TEST = "restore_test", "Restore test"
    EXPIRE = "expire", "Expire"


class JobState(models.TextChoices):
    """queued → running → succeeded | failed | cancelled (queued → cancelled too)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"

    @classmethod
    def open(cls) -> tuple[str, ...]:
        return (cls.QUEUED, cls.RUNNING)

    @classmethod
    def terminal(cls) -> tuple[str, ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED)


class JobTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    RETRY = "retry", "Automatic retry"
    REQUEST = "request", "Request"
    USER = "user", "User (backup now)"
    SYSTEM = "system", "System (restore test, retention)"


class ErrorClass(models.TextChoices):
    """Why a job failed: the agent's ``error_class`` (protocol 2), or classified from its error text.

    The agent's list (``backup_agent/error_classes.py``) is a subset of this one;
    ``lease_expired`` is the portal's own (the agent stopped reporting).
    """

    PERMISSION_DENIED = "permission_denied", "Permission denied"
    DISK_FULL = "disk_full", "Disk full"
    DATABASE_UNREACHABLE = "database_unreachable", "Database unreachable"
    COMMAND_NOT_FOUND = "command_not_found", "Command not found"
    TIMEOUT = "timeout", "Timeout"
    CHECKSUM_MISMATCH = "checksum_mismatch", "Checksum mismatch"
    LEASE_EXPIRED = "lease_expired", "Agent stopped reporting (lease expired)"
    REFUSED_BY_AGENT = "refused_by_agent", "Refused by the agent's allow-list"
    INVALID_JOB = "invalid_job", "Invalid job (options, target or storage)"
    UNKNOWN = "unknown", "Unknown"


class BackupStatus(models.TextChoices):
    """available → expired (retention reached, data removal queued) → deleted."""

    AVAILABLE = "available", "Available"
    EXPIRED = "expired", "Expired"
    DELETED = "deleted", "Deleted"


class BackupLevel(models.TextChoices):
    """A full holds the whole tree; an incremental what changed since its base (docs/incremental.md)."""

    FULL = "full", "Full"
    INCREMENTAL = "incremental", "Incremental"


class Verification(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class AgentStatus(models.TextChoices):
    """Derived from last_seen_at and revocation; never stored."""

    NEVER_SEEN = "never_seen", "Never seen"
    ONLINE = "online", "Online"
    SILENT = "silent", "Silent"
    REVOKED = "revoked", "Revoked"


class AlertSeverity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AlertKind(models.TextChoices):
    JOB_FAILED = "job_failed", "Job failed"
    RPO_BREACHED = "rpo_breached", "RPO breached"
    AGENT_SILENT = "agent_silent", "Agent silent"
    STORAGE_NEARLY_FULL = "storage_nearly_full", "Storage nearly full"
    RESTORE_TEST_FAILED = "restore_test_failed", "Restore test failed"
    RESTORE_TEST_OVERDUE = "restore_test_overdue", "Restore test overdue"
    AGENT_CLONED = "agent_cloned", "Agent token used by a second host"
    ANOMALY_DETECTED = "anomaly_detected", "Backup unlike its history (possible ransomware or mass deletion)"
    STORAGE_FULL_SOON = "storage_full_soon", "Storage forecast to fill"
    EXPIRED_NOT_REMOVED = "expired_not_removed", "Expired backups left on storage (no agent to remove them)"
    AGENT_UNSUPPORTED = "agent_unsupported", "Agent too old for this portal"


class EnrolmentPurpose(models.TextChoices):
    """Enrol creates an agent for a new host; re-key gives an existing agent a new token (team only)."""

    ENROL = "enrol", "Enrol a new host"
    REKEY = "rekey", "Re-key an existing agent"


class AgentAction(models.TextChoices):
    """What the agent audit trail records."""

    REGISTERED = "registered", "Host registered for an application"
    SHARED = "shared", "Host shared with another application"
    UNREGISTERED = "unregistered", "Host released (its request was withdrawn)"
    TOKEN_ISSUED = "token_issued", "Enrolment token issued"
    REKEY_ISSUED = "rekey_issued", "Re-key token issued"
    ENROLLED = "enrolled", "Enrolled"
    REKEYED = "rekeyed", "Re-keyed"
    REVOKED = "revoked", "Revoked"
    AUTO_UPGRADE = "auto_upgrade", "Automatic upgrade switched on or off"
