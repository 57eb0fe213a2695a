"""The catalog: what is protected, where, how, and every backup ever taken."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Exists, FilteredRelation, OuterRef, Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact
from django.utils import timezone

from catalog import agent_versions
from catalog.append_only import AppendOnlyModel, AppendOnlyQuerySet
from catalog.choices import (
    AgentAction,
    AgentStatus,
    AlertKind,
    AlertSeverity,
    BackupLevel,
    BackupStatus,
    ClientStatus,
    Compression,
    EnrolmentPurpose,
    ErrorClass,
    JobKind,
    JobState,
    JobTrigger,
    Plugin,
    StorageKind,
    Verification,
)
from catalog.compiled import CompiledQuery
from catalog.tenancy import TenantQuerySet, owned_application_ids

hostname_validator = RegexValidator(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z",
    "Enter a valid host name (letters, digits, hyphens and dots, e.g. db01.example.com).",
)


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: they are long and random, so no salt or slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """A 256-bit secret with a prefix that says what it is (and that secret scanners can match).

    The prefix also keeps the token from starting with "-", which a command line
    such as ``backup-agent enrol --token …`` would read as an option.
    """
    return f"{prefix}_{secrets.token_urlsafe(32)}"


#: The most points in one chain (a full and its incrementals); the agent's MAX_CHAIN_DEPTH + 1.
MAX_CHAIN_LENGTH = 250


def validate_cron(value: str) -> None:
    if not croniter.is_valid(value):
        raise ValidationError(
            "%(value)s is not a valid cron schedule (five fields, e.g. '0 2 * * *').",
            params={"value": value},
        )


# --- Querysets (tenancy) ---------------------------------------------------------


class CostCenterQuerySet(TenantQuerySet):
    def owned_by(self, user):
        owned = Application.objects.filter(pk__in=owned_application_ids(user))
        return self.filter(pk__in=owned.values("cost_center_id"))


class ApplicationQuerySet(TenantQuerySet):
    application_path = "pk"


def agent_silent_cutoff(now: datetime | None = None) -> datetime:
    """Agents whose recorded last poll is older than this are silent.

    ``last_seen_at`` is recorded only every ``agent_heartbeat_period()`` (H) while
    nothing else changes, so it lags the real last poll by less than H. With the
    cutoff at ``PORTAL_AGENT_SILENT_AFTER`` (S) and H + the poll interval ≤ S,
    the watch stays exact: an agent polling on time is never older than
    H + the poll interval, so never silent; an agent that stopped polling is
    silent S after its last recorded poll, so no later than S after its real one.
    """
    return (now or timezone.now()) - timedelta(seconds=settings.PORTAL_AGENT_SILENT_AFTER)


#: The longest default heartbeat period: what people see as "last poll" is never older than this.
HEARTBEAT_DEFAULT_CAP = 300


def agent_heartbeat_period() -> timedelta:
    """H: a poll that changes nothing records ``last_seen_at`` only when the recorded one is this old.

    ``PORTAL_AGENT_HEARTBEAT_SECONDS`` when set (settings refuse more than S − P),
    else half the slack S − P (S: ``PORTAL_AGENT_SILENT_AFTER``, P:
    ``PORTAL_AGENT_POLL_SECONDS``) and at most ``HEARTBEAT_DEFAULT_CAP``: 75 s with
    the defaults (180 s, 30 s), a write every third poll, and an agent may still
    miss polls for S − H − P = 75 s before it counts as silent. Never more than
    S − P, whatever the settings, so ``agent_silent_cutoff`` stays exact; 0 records
    every poll.
    """
    slack = max(0, settings.PORTAL_AGENT_SILENT_AFTER - settings.PORTAL_AGENT_POLL_SECONDS)
    configured = settings.PORTAL_AGENT_HEARTBEAT_SECONDS
    seconds = min(slack // 2, HEARTBEAT_DEFAULT_CAP) if configured is None else configured
    return timedelta(seconds=max(0, min(seconds, slack)))


class AgentQuerySet(TenantQuerySet):
    def with_status(self, status: str, now: datetime | None = None):
        """The SQL twin of ``Agent.status``."""
        cutoff = agent_silent_cutoff(now)
        live = self.filter(revoked_at__isnull=True)
        match status:
            case AgentStatus.REVOKED:
                return self.filter(revoked_at__isnull=False)
            case AgentStatus.NEVER_SEEN:
                return live.filter(last_seen_at__isnull=True)
            case AgentStatus.SILENT:
                return live.filter(last_seen_at__lt=cutoff)
            case AgentStatus.ONLINE:
                return live.filter(last_seen_at__gte=cutoff)
        raise ValueError(f"unknown agent status {status!r}")

    def owned_by(self, user):
        # Through the M2M table as a subquery: a join would repeat an agent
        # serving two of the user's applications.
        serving = Agent.applications.through.objects.filter(
            application_id__in=owned_application_ids(user)
        )
        return self.filter(pk__in=serving.values("agent_id"))

    def authenticate(self, token: str) -> Agent | None:
        """The live agent holding ``token``, with its queued and running jobs, in one query.

        Every request of every agent asks, and a poll decides from ``agent.open_jobs``
        whether it has anything to do: for an idle poll this is its only read.
        Compiled once (``catalog.compiled``); the open jobs come through
        ``job_open_by_agent_idx``, a few rows at most (one open backup per client).
        """
        rows = _AGENT_BY_TOKEN.rows([hash_token(token)], using=self.db)
        if not rows:
            return None
        fields = _agent_fields()
        agent = Agent.from_db(self.db, fields, rows[0][: len(fields)])
        agent.open_jobs = [OpenJob(*row[len(fields) :]) for row in rows if row[len(fields)] is not None]
        return agent


class StorageTargetQuerySet(TenantQuerySet):
    """Storage is the backup team's business: owners see it only through their backups."""


class ProtectionPolicyQuerySet(TenantQuerySet):
    # Policies are the published service tiers: every signed-in owner picks from them.
    shared_with_owners = True


class BackupClientQuerySet(TenantQuerySet):
    application_path = "application"


class JobQuerySet(TenantQuerySet):
    application_path = "client__application"


#: Stored: on the target, whether still current or expired and not yet removed (what fills a target).
STORED = Q(status__in=(BackupStatus.AVAILABLE, BackupStatus.EXPIRED))
#: Unusual for its client (catalog/anomaly.py) and not acknowledged yet.
FLAGGED = Q(anomaly__has_key="rules", anomaly_acknowledged_at__isnull=True)


class BackupQuerySet(TenantQuerySet):
    application_path = "client__application"

    def restorable(self):
        """Points that can be restored: available, not failed verification, and their chain whole.

        The one rule (restores, restore tests, compliance). A full stands alone; an incremental
        needs its full and every point between them (same ``full``, taken no later) available
        and not failed verification. Chains are linear, one point after the other, so those are
        exactly its bases. One SQL query, whatever the chains' length.
        """
        broken = Backup.objects.filter(
            Q(pk=OuterRef("full_id"))
            | Q(full_id=OuterRef("full_id"), taken_at__lt=OuterRef("taken_at"))
        ).filter(~Q(status=BackupStatus.AVAILABLE) | Q(verification=Verification.FAILED))
        return (
            self.filter(status=BackupStatus.AVAILABLE)
            .exclude(verification=Verification.FAILED)
            .exclude(Q(full__isnull=False) & Exists(broken))
        )

    def flagged(self):
        """Points the anomaly check found unusual (catalog/anomaly.py) that nobody acknowledged yet,
        whatever became of them: what a question about one point asks (is it, or a point before it,
        suspicious? the restore page; a retired client's points can still be restored)."""
        return self.filter(FLAGGED)

    def stored(self):
        """Points on their target: available or expired, not yet removed."""
        return self.filter(STORED)

    def suspicious(self):
        """Flagged points still stored (available or expired) of clients not retired: what is open and
        someone should look at (the client's page, its alert, retention waiting, the metrics). A deleted
        point, or a retired client's, is history: it does not count for ever."""
        return (
            self.flagged()
            .stored()
            .exclude(client__status=ClientStatus.RETIRED)
        )

    def not_suspicious(self):
        """Every other point: nothing unusual, not checked yet, or acknowledged as expected."""
        return self.exclude(FLAGGED)


class EnrolmentTokenQuerySet(TenantQuerySet):
    application_path = "application"


class AlertQuerySet(TenantQuerySet):
    application_path = "application"

    def open(self):
        return self.filter(resolved_at__isnull=True)


# --- Models -----------------------------------------------------------------------


class CostCenter(models.Model):
    """A budget that pays for protection; chargeback is per cost centre."""

    code = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    owner_email = models.EmailField(help_text="Receives the monthly chargeback report.")

    objects = CostCenterQuerySet.as_manager()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} — {self.name}"


class Application(models.Model):
    """A business application: the tenancy boundary for clients, backups and requests."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    cost_center = models.ForeignKey(
        CostCenter, on_delete=models.PROTECT, related_name="applications"
    )
    owners = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="owned_applications"
    )
    owner_group = models.ForeignKey(
        "auth.Group",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="owned_applications",
        help_text="Members of this group own the application too.",
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ApplicationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """The backup agent on one application server; authenticates with a hashed token."""

    #: The protocol from which an agent restores only the paths a restore names (older ones
    #: ignore them and restore everything: docs/agent-protocol.md).
    SELECTIVE_RESTORE_PROTOCOL = 3
    #: The protocol from which an agent takes incremental backups and restores chains.
    INCREMENTAL_PROTOCOL = 4
    #: The oldest protocol this portal still speaks: an agent speaking an older one is refused at
    #: every call (426 ``agent_unsupported``, docs/agent-protocol.md). 1, because the portal still
    #: answers every older protocol in full (selective restores and incrementals are simply not
    #: offered to agents below 3 and 4); raised here, in a release, when a compatibility path goes.
    OLDEST_PROTOCOL = 1

    hostname = models.CharField(max_length=253, unique=True, validators=[hostname_validator])
    applications = models.ManyToManyField(Application, blank=True, related_name="agents")
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    version = models.CharField(max_length=32, blank=True)
    protocol = models.PositiveSmallIntegerField(
        default=1,
        help_text="The protocol version it last spoke (docs/agent-protocol.md); 1 if it did not say.",
    )
    plugins = models.JSONField(default=list, blank=True, help_text="Plugins the agent reported.")
    enrolled_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    allow_list = models.JSONField(
        null=True,
        blank=True,
        help_text="What the server's administrator allows this agent to do, as it last reported it.",
    )
    # The agent instance that holds the token: an id generated on the host and kept outside
    # the copyable config. A copied config on a second host has another id and is refused.
    instance_id = models.CharField(max_length=64, blank=True, editable=False)
    instance_host = models.CharField(
        max_length=253, blank=True, editable=False, help_text="The host name the bound instance reported."
    )
    auto_upgrade = models.BooleanField(
        default=False,
        help_text="Upgrade this agent to the portal's version between jobs, without asking its server's "
        "administrator (the backup team decides; docs/agent.md, \"Upgrading\").",
    )

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["hostname"]
        indexes = [
            # The silent-agent watch: enrolled agents by last poll.
            models.Index(
                fields=["last_seen_at"],
                name="agent_live_seen_idx",
                condition=Q(revoked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.hostname

    @property
    def restores_selections(self) -> bool:
        return self.protocol >= self.SELECTIVE_RESTORE_PROTOCOL

    @property
    def restores_chains(self) -> bool:
        """Whether it takes incrementals and rebuilds a tree from a chain (protocol 4)."""
        return self.protocol >= self.INCREMENTAL_PROTOCOL

    @property
    def version_status(self) -> str:
        """current, outdated (older than the one shipped), unsupported or unknown: catalog.agent_versions."""
        return agent_versions.status(self.version, self.protocol)

    @property
    def is_outdated(self) -> bool:
        return self.version_status in (agent_versions.OUTDATED, agent_versions.UNSUPPORTED)

    @property
    def shipped_version(self) -> str:
        """The version an upgrade installs: the agent this portal serves."""
        return agent_versions.shipped_version()

    @property
    def is_enrolled(self) -> bool:
        """Enrolled once (even if revoked since): only a re-key by the team gives it a new token."""
        return self.enrolled_at is not None or self.token_hash is not None

    @property
    def status(self) -> str:
        if self.revoked_at:
            return AgentStatus.REVOKED
        if not self.last_seen_at:
            return AgentStatus.NEVER_SEEN
        if self.last_seen_at < agent_silent_cutoff():
            return AgentStatus.SILENT
        return AgentStatus.ONLINE

    def issue_token(self) -> str:
        """Give the agent a new long-lived token; only its hash is kept."""
        token = new_token("bpa")
        self.token_hash = hash_token(token)
        self.revoked_at = None
        return token


@dataclass(frozen=True)
class OpenJob:
    """One of an agent's queued or running jobs, as read with the agent (``Agent.open_jobs``)."""

    pk: int
    state: str
    not_before: datetime
    started_at: datetime | None


def _agent_fields() -> list[str]:
    return [field.attname for field in Agent._meta.concrete_fields]


_HASH_PLACEHOLDER = "\0token-hash"  # a variable of the compiled query: the token's hash at every lookup
_AGENT_BY_TOKEN = CompiledQuery(
    lambda: Agent.objects.annotate(
        open_job=FilteredRelation("jobs", condition=Q(jobs__state__in=JobState.open()))
    )
    .filter(token_hash=_HASH_PLACEHOLDER, revoked_at__isnull=True)
    .order_by()
    .values_list(
        *_agent_fields(), "open_job__id", "open_job__state", "open_job__not_before", "open_job__started_at"
    ),
    variables=[_HASH_PLACEHOLDER],
)


class StorageTarget(models.Model):
    """Protection storage the agents write to directly; the portal never touches the data."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=StorageKind, default=StorageKind.FILESYSTEM)
    location = models.CharField(
        max_length=500, help_text="Path as mounted on the agents, or the bucket name."
    )
    capacity_bytes = models.BigIntegerField(
        validators=[MinValueValidator(1)],
        help_text="Logical capacity: what the portal may store here (on a deduplicating appliance, "
        "its physical capacity times the expected ratio).",
    )
    used_bytes = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    compression = models.CharField(max_length=8, choices=Compression, default=Compression.NONE)
    keep_uncompressed = models.BooleanField(
        default=True,
        help_text="A deduplicating appliance loses its ratio on compressed data: keep it raw.",
    )

    objects = StorageTargetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(capacity_bytes__gt=0), name="storagetarget_capacity_positive"
            ),
            models.CheckConstraint(condition=Q(used_bytes__gte=0), name="storagetarget_used_gte_0"),
            models.CheckConstraint(
                condition=~Q(keep_uncompressed=True, compression=Compression.GZIP),
                name="storagetarget_uncompressed_means_no_gzip",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


class ProtectionPolicy(models.Model):
    """An SLA tier: when to back up, how long to keep, how fresh, where, and at what price."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    schedule = models.CharField(
        max_length=100, validators=[validate_cron], help_text="Cron, in UTC (e.g. '0 2 * * *')."
    )
    retention_days = models.PositiveIntegerField()
    rpo_hours = models.PositiveIntegerField(help_text="Maximum age of the last good backup.")
    storage_target = models.ForeignKey(
        StorageTarget, on_delete=models.PROTECT, related_name="policies"
    )
    restore_test_interval_days = models.PositiveIntegerField(default=30)
    max_retries = models.PositiveSmallIntegerField(
        default=3, help_text="Automatic retries of a failed backup before a person is alerted."
    )
    price_per_gb_month = models.DecimalField(max_digits=10, decimal_places=4)
    auto_approve_clients = models.BooleanField(
        default=False, help_text="New clients on this policy are approved by the system."
    )
    # Backup levels: both empty (the default) means every backup is a full. Otherwise the
    # files plugin takes incrementals between fulls (database dumps are always full).
    full_every_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Take a full backup when the last full is this many days old (7: weekly), "
        "incrementals in between. Empty: not by age.",
    )
    full_every_backups = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CHAIN_LENGTH)],
        help_text="A full backup every N backups (1 full + N-1 incrementals). Empty: not by count. "
        "Both empty: every backup is a full. Database dumps are always full.",
    )

    objects = ProtectionPolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "protection policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(retention_days__gt=0), name="policy_retention_positive"
            ),
            models.CheckConstraint(condition=Q(rpo_hours__gt=0), name="policy_rpo_positive"),
            models.CheckConstraint(
                condition=Q(restore_test_interval_days__gt=0),
                name="policy_restore_test_interval_positive",
            ),
            models.CheckConstraint(
                condition=Q(price_per_gb_month__gte=0), name="policy_price_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(full_every_days__isnull=True) | Q(full_every_days__gt=0),
                name="policy_full_every_days_positive",
            ),
            models.CheckConstraint(
                condition=Q(full_every_backups__isnull=True)
                | Q(full_every_backups__gt=0, full_every_backups__lte=MAX_CHAIN_LENGTH),
                name="policy_full_every_backups_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def next_run_after(self, moment):
        return croniter(self.schedule, moment).get_next(type(moment))

    @property
    def takes_incrementals(self) -> bool:
        """Whether its file backups take incrementals between fulls (database dumps never do)."""
        return self.full_every_days is not None or self.full_every_backups is not None


class BackupClient(models.Model):
    """One protected workload (a folder set, a database, a command) on one agent.

    pending_enrolment → active ⇄ paused → retired
    """

    application = models.ForeignKey(
        Application, on_delete=models.PROTECT, related_name="clients"
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, related_name="clients", null=True, blank=True
    )
    name = models.SlugField(max_length=100, help_text="Unique within the application.")
    hostname = models.CharField(max_length=253, validators=[hostname_validator])
    plugin = models.CharField(max_length=16, choices=Plugin)
    options = models.JSONField(default=dict, blank=True)
    policy = models.ForeignKey(
        ProtectionPolicy, on_delete=models.PROTECT, related_name="clients"
    )
    status = models.CharField(
        max_length=20, choices=ClientStatus, default=ClientStatus.PENDING_ENROLMENT
    )
    next_backup_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = BackupClientQuerySet.as_manager()

    class Meta:
        ordering = ["application__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["application", "name"], name="client_unique_name"),
            models.CheckConstraint(
                condition=~Q(status=ClientStatus.ACTIVE) | Q(agent__isnull=False),
                name="client_active_has_agent",
            ),
        ]
        indexes = [
            # The scheduler: active clients whose next backup is due.
            models.Index(
                fields=["next_backup_at"],
                name="client_due_idx",
                condition=Q(status=ClientStatus.ACTIVE),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.application.slug}/{self.name}"

    def clean(self) -> None:
        from catalog.plugin_options import validate_options

        try:
            validate_options(self.plugin, self.options)
        except ValidationError as exc:
            # Option rules name keys inside the JSON ("paths", "database"); on the
            # model they all belong to the ``options`` field.
            messages = [
                message if key in ("options", "plugin") else f"{key}: {message}"
                for key, errors in exc.message_dict.items()
                for message in errors
            ]
            field = "plugin" if "plugin" in exc.message_dict else "options"
            raise ValidationError({field: messages}) from exc


class Job(models.Model):
    """One execution of a backup, restore, restore test or expiry by an agent.

    queued → running → succeeded | failed | cancelled
    A running job holds a lease the agent extends by reporting progress; an
    expired lease fails the attempt, and failed backups are retried as new jobs.
    """

    kind = models.CharField(max_length=16, choices=JobKind)
    client = models.ForeignKey(BackupClient, on_delete=models.PROTECT, related_name="jobs")
    agent = models.ForeignKey(
        Agent,
        on_delete=models.PROTECT,
        related_name="jobs",
        help_text="The agent that runs it (for a restore: the target agent).",
    )
    backup = models.ForeignKey(
        "Backup",
        on_delete=models.PROTECT,
        related_name="jobs",
        null=True,
        blank=True,
        help_text="The recovery point a restore, restore test or expiry acts on.",
    )
    state = models.CharField(max_length=16, choices=JobState, default=JobState.QUEUED)
    trigger = models.CharField(max_length=16, choices=JobTrigger, default=JobTrigger.SCHEDULE)
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, related_name="retries", null=True, blank=True
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        related_name="+",
        null=True,
        blank=True,
    )
    target_location = models.CharField(max_length=1000, blank=True)
    overwrite = models.BooleanField(default=False)
    paths = models.JSONField(
        default=list, blank=True, help_text="A selective restore's files, folders or tables; empty: all."
    )
    # A backup's level, planned when an agent claims it (catalog/services/chains.py).
    level = models.CharField(max_length=12, choices=BackupLevel, blank=True)
    base = models.ForeignKey(
        "Backup",
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The recovery point an incremental backup builds on.",
    )
    level_reason = models.CharField(
        max_length=300, blank=True, help_text="Why a full was planned where the policy takes incrementals."
    )
    created_at = models.DateTimeField(default=timezone.now)
    not_before = models.DateTimeField(
        default=timezone.now, help_text="Not handed to an agent before this time (retry backoff)."
    )
    # The portal's clock: durations come from what the portal saw.
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The agent's clock, kept as information only (a host hours off must not skew durations).
    reported_started_at = models.DateTimeField(null=True, blank=True)
    reported_finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    error_class = models.CharField(max_length=24, choices=ErrorClass, blank=True)
    error_message = models.TextField(blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(attempt__gte=1), name="job_attempt_gte_1"),
            models.CheckConstraint(condition=Q(bytes_done__gte=0), name="job_bytes_done_gte_0"),
            models.CheckConstraint(
                condition=Q(bytes_total__isnull=True) | Q(bytes_total__gte=0),
                name="job_bytes_total_gte_0",
            ),
            models.CheckConstraint(
                condition=Q(kind=JobKind.BACKUP) | Q(backup__isnull=False),
                name="job_non_backup_names_backup",
            ),
            models.CheckConstraint(
                condition=~Q(state=JobState.RUNNING) | Q(lease_expires_at__isnull=False),
                name="job_running_has_lease",
            ),
            # One backup of a client at a time: a second "backup now" gets the open one.
            models.UniqueConstraint(
                fields=["client"],
                condition=Q(kind=JobKind.BACKUP, state__in=JobState.open()),
                name="job_one_open_backup_per_client",
            ),
        ]
        indexes = [
            # Agent poll: this agent's queued and running jobs (its one read), queued ones oldest first
            # (claim). Only open jobs are in it, so it stays small however long the history grows.
            models.Index(
                fields=["agent", "not_before"],
                name="job_open_by_agent_idx",
                condition=Q(state__in=JobState.open()),
            ),
            # Lease reaper: running jobs by lease expiry.
            models.Index(
                fields=["lease_expires_at"],
                name="job_running_lease_idx",
                condition=Q(state=JobState.RUNNING),
            ),
            # Lists and reports: jobs by state and time.
            models.Index(fields=["state", "created_at"], name="job_state_created_idx"),
            # The admin's and API's default order, newest first.
            models.Index(fields=["-created_at"], name="job_created_idx"),
            # Reports and metrics: jobs finished in a period.
            models.Index(fields=["finished_at"], name="job_finished_idx"),
            # Restore tests: a client's newest test (scheduler, watch, compliance report).
            models.Index(
                fields=["client", "-created_at"],
                name="job_client_restore_test_idx",
                condition=Q(kind=JobKind.RESTORE_TEST),
            ),
            models.Index(fields=["client", "-created_at"], name="job_client_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Backup(models.Model):
    """A recovery point in protection storage, recorded once its job succeeded.

    available → expired (retention reached, removal queued) → deleted
    """

    client = models.ForeignKey(BackupClient, on_delete=models.PROTECT, related_name="backups")
    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="produced_backup")
    storage_target = models.ForeignKey(
        StorageTarget, on_delete=models.PROTECT, related_name="backups"
    )
    taken_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    size_bytes = models.BigIntegerField(help_text="Front-end size: what the plugin read.")
    stored_size_bytes = models.BigIntegerField(help_text="What the storage holds.")
    location = models.CharField(max_length=1000, help_text="Relative to the target's root.")
    sha256 = models.CharField(max_length=64)
    compression = models.CharField(max_length=8, choices=Compression, default=Compression.NONE)
    manifest = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=BackupStatus, default=BackupStatus.AVAILABLE)
    verified_at = models.DateTimeField(null=True, blank=True)
    verification = models.CharField(max_length=8, choices=Verification, blank=True)
    verification_job = models.ForeignKey(
        Job,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The restore test that set verified_at: its result, log and duration.",
    )
    legal_hold = models.BooleanField(default=False)
    legal_hold_reason = models.CharField(max_length=500, blank=True)
    legal_hold_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    legal_hold_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The recovery point's file list (catalog/services/file_lists.py): one file in the
    # portal's PORTAL_INDEX_ROOT, never a row per file. Empty: no file list (taken
    # before indexing, a plugin without one, or never received); it restores whole.
    index_entries = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Entries in its file list; empty: no file list."
    )
    index_kind = models.CharField(max_length=16, blank=True)
    index_size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    index_sha256 = models.CharField(max_length=64, blank=True)
    # Chains (docs/incremental.md): an incremental holds what changed since its base; restoring
    # it needs every point back to its full. A base cannot expire while an available point
    # builds on it (enforced by triggers too: migration 0013).
    level = models.CharField(max_length=12, choices=BackupLevel, default=BackupLevel.FULL)
    base = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        related_name="dependents",
        null=True,
        blank=True,
        help_text="The point this incremental builds on; empty for a full.",
    )
    full = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        related_name="chain_members",
        null=True,
        blank=True,
        help_text="The full its chain starts from; empty for a full.",
    )
    # Anomaly check (catalog/anomaly.py, docs/anomalies.md): files new, changed and deleted since
    # the point before (empty: unknown, no file list on either side), and the evidence when the
    # point was unusual for its client ({}: nothing unusual, or not checked yet).
    files_new = models.PositiveBigIntegerField(null=True, blank=True)
    files_changed = models.PositiveBigIntegerField(null=True, blank=True)
    files_deleted = models.PositiveBigIntegerField(null=True, blank=True)
    anomaly = models.JSONField(default=dict, blank=True)
    anomaly_checked_at = models.DateTimeField(null=True, blank=True)
    anomaly_acknowledged_at = models.DateTimeField(null=True, blank=True)
    anomaly_acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    anomaly_acknowledged_note = models.CharField(max_length=500, blank=True)

    objects = BackupQuerySet.as_manager()

    class Meta:
        ordering = ["-taken_at"]
        get_latest_by = "taken_at"
        constraints = [
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="backup_size_gte_0"),
            models.CheckConstraint(
                condition=Q(stored_size_bytes__gte=0), name="backup_stored_size_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("taken_at")),
                name="backup_expires_after_taken",
            ),
            models.CheckConstraint(
                condition=Q(legal_hold=False) | ~Q(legal_hold_reason=""),
                name="backup_legal_hold_has_reason",
            ),
            # Retention is honoured whatever code writes the row: nothing is
            # deleted before it expires, and nothing under legal hold at all.
            models.CheckConstraint(
                condition=~Q(status=BackupStatus.DELETED)
                | Q(deleted_at__isnull=False, deleted_at__gte=models.F("expires_at")),
                name="backup_deleted_only_after_expiry",
            ),
            models.CheckConstraint(
                condition=~Q(legal_hold=True, status=BackupStatus.DELETED),
                name="backup_legal_hold_never_deleted",
            ),
            models.CheckConstraint(
                condition=Exact(Length("sha256"), 64), name="backup_sha256_length"
            ),
            models.CheckConstraint(
                condition=Q(level=BackupLevel.FULL, base__isnull=True, full__isnull=True)
                | Q(level=BackupLevel.INCREMENTAL, base__isnull=False, full__isnull=False),
                name="backup_incremental_has_base",
            ),
        ]
        indexes = [
            # Client page and RPO: a client's recovery points, newest first.
            models.Index(fields=["client", "-taken_at"], name="backup_client_recent_idx"),
            # Retention: available backups by expiry.
            models.Index(
                fields=["expires_at"],
                name="backup_available_expiry_idx",
                condition=Q(status=BackupStatus.AVAILABLE),
            ),
            # Monthly reports: backups by time.
            models.Index(fields=["taken_at"], name="backup_taken_idx"),
            # Suspicious points (a handful among millions): the client page, the restore page's
            # warning and the metrics' count read this small index, never the table.
            models.Index(
                fields=["client", "-taken_at"],
                name="backup_suspicious_idx",
                condition=FLAGGED,
            ),
            # The anomaly check's safety net (catalog.tasks.check_anomalies): points not checked yet.
            models.Index(
                fields=["taken_at"],
                name="backup_anomaly_unchecked_idx",
                condition=Q(anomaly_checked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client} @ {self.taken_at:%Y-%m-%d %H:%M}"

    @property
    def has_file_list(self) -> bool:
        return self.index_entries is not None

    @property
    def suspicious(self) -> bool:
        """Unusual for its client and not acknowledged: the same rule as ``BackupQuerySet.suspicious``."""
        return "rules" in (self.anomaly or {}) and self.anomaly_acknowledged_at is None


class Alert(models.Model):
    """Something a person should know about; open until resolved, acknowledged by a person.

    ``key`` names the condition (e.g. ``rpo_breached:client:5``): at most one
    open alert per key, so a watch that runs every minute raises one alert per
    breach, not one per run.
    """

    kind = models.CharField(max_length=24, choices=AlertKind)
    severity = models.CharField(max_length=8, choices=AlertSeverity)
    key = models.CharField(max_length=200)
    application = models.ForeignKey(
        Application, on_delete=models.PROTECT, related_name="alerts", null=True, blank=True
    )
    client = models.ForeignKey(
        BackupClient, on_delete=models.PROTECT, related_name="alerts", null=True, blank=True
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, related_name="alerts", null=True, blank=True
    )
    storage_target = models.ForeignKey(
        StorageTarget, on_delete=models.PROTECT, related_name="alerts", null=True, blank=True
    )
    job = models.ForeignKey(
        Job, on_delete=models.PROTECT, related_name="alerts", null=True, blank=True
    )
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="acknowledged_alerts",
        null=True,
        blank=True,
    )
    emailed_at = models.DateTimeField(null=True, blank=True, help_text="Sent at once (critical alerts).")
    digested_at = models.DateTimeField(null=True, blank=True, help_text="Included in the daily digest.")

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=Q(resolved_at__isnull=True),
                name="alert_one_open_per_key",
            ),
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True, acknowledged_by__isnull=True)
                | Q(acknowledged_at__isnull=False, acknowledged_by__isnull=False),
                name="alert_ack_has_who_and_when",
            ),
        ]
        indexes = [
            # Alert lists and digests: unacknowledged alerts, newest first.
            models.Index(
                fields=["-created_at"],
                name="alert_unacked_idx",
                condition=Q(acknowledged_at__isnull=True),
            ),
            # The full alert list, newest first.
            models.Index(fields=["-created_at"], name="alert_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_severity_display()}: {self.message[:60]}"


class OrphanArchiveQuerySet(TenantQuerySet):
    """The backup team's list; owners never see storage housekeeping."""

    def due(self, now: datetime | None = None):
        return self.filter(removal_due_at__lte=now or timezone.now())


class OrphanArchive(models.Model):
    """An archive an agent wrote and still finds on storage that the catalog does not know.

    A backup whose report was lost for good (its retry already ran) leaves one. The
    agent lists what it wrote; the portal records what no Backup explains, shows it
    to the team, and after a grace period tells the agent to remove it.
    """

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="orphan_archives")
    location = models.CharField(
        max_length=1000, help_text="Relative to the storage root, as the agent wrote it."
    )
    size_bytes = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    found_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    removal_due_at = models.DateTimeField(help_text="After this, the agent is told to remove it.")

    objects = OrphanArchiveQuerySet.as_manager()

    class Meta:
        ordering = ["found_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "location"], name="orphanarchive_unique_per_agent"),
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="orphanarchive_size_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.agent}: {self.location}"


class EnrolmentToken(models.Model):
    """A one-time secret that enrols a new host or re-keys an existing agent; only its hash is kept.

    At most one token per host is outstanding: issuing one voids the others.
    """

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    purpose = models.CharField(max_length=8, choices=EnrolmentPurpose, default=EnrolmentPurpose.ENROL)
    application = models.ForeignKey(
        Application,
        on_delete=models.PROTECT,
        related_name="enrolment_tokens",
        null=True,
        blank=True,
        help_text="The application the new host is registered for (none for a re-key).",
    )
    hostname = models.CharField(
        max_length=253, validators=[hostname_validator], help_text="The host allowed to enrol."
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(
        null=True, blank=True, help_text="A newer token for the host replaced it, or its request ended."
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, related_name="enrolments", null=True, blank=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = EnrolmentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(used_at__isnull=True) | Q(agent__isnull=False),
                name="enrolmenttoken_used_names_agent",
            ),
            models.CheckConstraint(
                condition=~Q(purpose=EnrolmentPurpose.ENROL) | Q(application__isnull=False),
                name="enrolmenttoken_enrol_names_application",
            ),
            # Two live tokens for one host would let two people race to be that host.
            models.UniqueConstraint(
                fields=["hostname"],
                condition=Q(used_at__isnull=True, voided_at__isnull=True),
                name="enrolmenttoken_one_outstanding_per_host",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()}: {self.hostname}"

    @property
    def is_outstanding(self) -> bool:
        return self.used_at is None and self.voided_at is None and self.expires_at > timezone.now()


class AgentEventQuerySet(AppendOnlyQuerySet):
    """The backup team's record; owners never read it."""


class AgentEvent(AppendOnlyModel):
    """One thing that happened to a host's agent: registered, shared, keys issued, enrolled, revoked."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="events")
    occurred_at = models.DateTimeField(default=timezone.now)
    action = models.CharField(max_length=16, choices=AgentAction)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    actor_label = models.CharField(max_length=200, help_text="User name, 'system' or the agent's host.")
    message = models.TextField(blank=True)

    objects = AgentEventQuerySet.as_manager()

    class Meta:
        ordering = ["occurred_at", "pk"]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.agent}: {self.get_action_display()}"
