"""What people ask for — new clients and restores — and the audit trail of every decision."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from catalog.append_only import AppendOnlyModel, AppendOnlyQuerySet
from catalog.choices import Plugin
from catalog.models import (
    Agent,
    Application,
    Backup,
    BackupClient,
    EnrolmentToken,
    Job,
    ProtectionPolicy,
    hash_token,
    hostname_validator,
    new_token,
)
from catalog.tenancy import TenantQuerySet
from requests_app.choices import ActorKind, Channel, ClientAction, RequestStatus
from requests_app.webhooks import Event


class RequestQuerySet(TenantQuerySet):
    """What both kinds of request share: tenancy (``visible_to``, strict, as the admin and the
    webhooks apply it), the person's own requests, and the open ones."""

    def for_person(self, user) -> RequestQuerySet:
        """Requests ``user`` may follow in the portal and the API: their applications' and their own.

        Wider than ``visible_to``: whoever asked keeps following the request (its outcome,
        its enrolment command) after they stop owning its application.
        """
        return self.visible_to(user) | self.asked_by(user)

    def asked_by(self, user) -> RequestQuerySet:
        return self.filter(requester_id=user.pk)

    def open(self) -> RequestQuerySet:
        return self.filter(status__in=RequestStatus.open())


class ClientRequestQuerySet(RequestQuerySet):
    application_path = "application"


class RestoreRequestQuerySet(RequestQuerySet):
    application_path = "backup__client__application"


class AuditEventQuerySet(AppendOnlyQuerySet):
    application_path = "application"


class RequestBase(models.Model):
    """What both kinds of request share: who asked, why, through which ticket, and the decision."""

    status = models.CharField(max_length=16, choices=RequestStatus, default=RequestStatus.SUBMITTED)
    needs_approval = models.BooleanField(
        default=True, help_text="Decided at submission by the approval rules."
    )
    approval_rule = models.CharField(max_length=300, blank=True, help_text="Why, in words.")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    external_ref = models.CharField(max_length=100, blank=True, help_text="Ticket number, e.g. INC0012345.")
    api_key = models.ForeignKey(
        "ApiKey",
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The integration that submitted it, if any.",
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="Why it failed, for a person.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_open(self) -> bool:
        return self.status in RequestStatus.open()


class ClientRequest(RequestBase):
    """A request to protect a new workload on a server, or to retire a protected one (``action``).

    protect: submitted → approved → provisioned (agent enrolled); or rejected / cancelled
    retire:  submitted → approved → completed (at once: the client is retired); or rejected / cancelled

    A retire request names its ``client`` from the start and copies the client's host, name,
    plugin, options and policy, so lists, mails and the API read it like any client request.
    """

    action = models.CharField(
        max_length=8,
        choices=ClientAction,
        default=ClientAction.PROTECT,
        help_text="Protect a new client, or retire the client it names.",
    )
    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="client_requests")
    hostname = models.CharField(max_length=253, validators=[hostname_validator])
    name = models.SlugField(max_length=100, help_text="Name of the new client within the application.")
    plugin = models.CharField(max_length=16, choices=Plugin)
    options = models.JSONField(default=dict)
    policy = models.ForeignKey(ProtectionPolicy, on_delete=models.PROTECT, related_name="client_requests")
    justification = models.TextField(blank=True)
    # protect: the client it created, once approved (one request per client); retire: the client to retire.
    client = models.ForeignKey(
        BackupClient, on_delete=models.PROTECT, related_name="requests", null=True, blank=True
    )
    # The newest token issued for this request. Only its hash is kept: the requester
    # sees the clear text once, when they issue it (docs/security.md).
    enrolment = models.OneToOneField(
        EnrolmentToken, on_delete=models.PROTECT, related_name="client_request", null=True, blank=True
    )

    objects = ClientRequestQuerySet.as_manager()

    class Meta(RequestBase.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["application", "name"],
                condition=Q(
                    action=ClientAction.PROTECT, status__in=[RequestStatus.SUBMITTED, RequestStatus.APPROVED]
                ),
                name="clientrequest_one_open_per_name",
            ),
            # A client is created by one request.
            models.UniqueConstraint(
                fields=["client"],
                condition=Q(action=ClientAction.PROTECT),
                name="clientrequest_one_per_client",
            ),
            # One open request to retire a client.
            models.UniqueConstraint(
                fields=["client"],
                condition=Q(
                    action=ClientAction.RETIRE, status__in=[RequestStatus.SUBMITTED, RequestStatus.APPROVED]
                ),
                name="clientrequest_one_open_retire",
            ),
            # A ticket opens one request per integration: a retried POST finds the first.
            models.UniqueConstraint(
                fields=["api_key", "external_ref"],
                condition=Q(api_key__isnull=False) & ~Q(external_ref=""),
                name="clientrequest_unique_ref_per_integration",
            ),
        ]
        indexes = [
            # The approval queue: open requests by age.
            models.Index(fields=["status", "created_at"], name="clientrequest_status_idx"),
        ]

    def __str__(self) -> str:
        what = "retire " if self.is_retire else ""
        return f"Client request #{self.pk}: {what}{self.application.slug}/{self.name} on {self.hostname}"

    def get_absolute_url(self) -> str:
        return reverse("requests:client-request", args=[self.pk])

    @property
    def is_retire(self) -> bool:
        return self.action == ClientAction.RETIRE

    kind = "client"


class RestoreRequest(RequestBase):
    """A request to restore a recovery point onto an agent.

    submitted → approved → running → completed | failed; or rejected / cancelled
    """

    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="restore_requests")
    target_agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="restore_requests")
    target_location = models.CharField(max_length=1000)
    overwrite = models.BooleanField(default=False)
    paths = models.JSONField(
        default=list,
        blank=True,
        help_text="What to restore: files and folders, or tables, as the file list shows them; empty: all.",
    )
    reason = models.TextField(blank=True)
    job = models.OneToOneField(
        Job, on_delete=models.PROTECT, related_name="restore_request", null=True, blank=True
    )

    objects = RestoreRequestQuerySet.as_manager()

    class Meta(RequestBase.Meta):
        constraints = [
            # A ticket opens one request per integration: a retried POST finds the first.
            models.UniqueConstraint(
                fields=["api_key", "external_ref"],
                condition=Q(api_key__isnull=False) & ~Q(external_ref=""),
                name="restorerequest_unique_ref_per_integration",
            ),
        ]
        indexes = [
            # The approval queue: open requests by age.
            models.Index(fields=["status", "created_at"], name="restorerequest_status_idx"),
        ]

    def __str__(self) -> str:
        return f"Restore request #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("requests:restore-request", args=[self.pk])

    kind = "restore"

    @property
    def application(self) -> Application:
        return self.backup.client.application


class AuditEvent(AppendOnlyModel):
    """One thing that happened to a request: who, through which channel, from which state to which.

    Append-only: saving an existing event, updating or deleting raises.
    """

    occurred_at = models.DateTimeField(default=timezone.now)
    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="audit_events")
    client_request = models.ForeignKey(
        ClientRequest, on_delete=models.PROTECT, related_name="events", null=True, blank=True
    )
    restore_request = models.ForeignKey(
        RestoreRequest, on_delete=models.PROTECT, related_name="events", null=True, blank=True
    )
    actor_kind = models.CharField(max_length=8, choices=ActorKind)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    actor_label = models.CharField(
        max_length=200, help_text="User name, API key name, agent host or 'system'."
    )
    channel = models.CharField(max_length=8, choices=Channel)
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, choices=RequestStatus, blank=True)
    to_status = models.CharField(max_length=16, choices=RequestStatus, blank=True)
    message = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["occurred_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(client_request__isnull=True, restore_request__isnull=False)
                | Q(client_request__isnull=False, restore_request__isnull=True),
                name="auditevent_names_one_request",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_label}: {self.action}"

    def clean(self) -> None:
        if self.pk is not None:
            raise ValidationError("Audit events cannot be changed.")


class ApiKeyQuerySet(models.QuerySet):
    def authenticate(self, key: str) -> ApiKey | None:
        return (
            self.select_related("user")
            .filter(key_hash=hash_token(key), revoked_at__isnull=True, user__is_active=True)
            .first()
        )


class ApiKey(models.Model):
    """An integration's credential (a ticketing system); it acts as ``user``. Only the hash is kept."""

    name = models.CharField(max_length=100, help_text="The integration, e.g. ServiceNow production.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys")
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    integration = models.BooleanField(
        "integration user's key",
        default=False,
        help_text="An integration user's key: may approve without a person's MFA. Leave unticked for a "
        "key that only submits and reads; it cannot approve or reject.",
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, *, user, name: str, integration: bool = False) -> tuple[ApiKey, str]:
        """Create a key; the clear text is returned once and never stored."""
        key = new_token("bpk")
        record = cls.objects.create(
            user=user, name=name, prefix=key[:10], key_hash=hash_token(key), integration=integration
        )
        return record, key


class IdempotencyRecord(models.Model):
    """The answer to a POST made with an ``Idempotency-Key``, replayed for the same key and body.

    ``owner`` is the integration (``api_key:<id>``) or the session user
    (``user:<id>``): keys of different callers never meet.
    """

    owner = models.CharField(max_length=40)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_unique_key_per_caller"),
        ]
        indexes = [
            # Purging records older than the retention window.
            models.Index(fields=["created_at"], name="idempotency_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key}"


class DeliveryStatus(models.TextChoices):
    """pending → delivered | failed (gave up after the retry window)."""

    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookFormat(models.TextChoices):
    """What a subscription's deliveries look like, and how they travel (requests_app/webhooks/chat.py)."""

    PORTAL = "portal", "Signed JSON (integrations)"
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams workflow webhook"
    EMAIL = "email", "E-mail"

    @classmethod
    def http(cls) -> tuple[str, ...]:
        """The formats POSTed to a URL; e-mail goes through Django's mail."""
        return (cls.PORTAL, cls.SLACK, cls.TEAMS)


#: What an application's notification channel may carry: its alerts and its requests' changes.
CHANNEL_EVENTS = (Event.ALERT_RAISED, Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED)
EMAIL_MAX_ADDRESSES = 10


class WebhookSubscription(models.Model):
    """Where an integration wants to hear about changes, and the secret that signs what we send.

    With an ``application`` it is that application's notification channel
    (Slack, Teams or e-mail, chosen by its owners on the application page): it
    hears only that application's alerts and request changes. Without one it
    is the backup team's or an integration's (``api_key``) signed-JSON webhook.
    """

    name = models.CharField(max_length=100)
    format = models.CharField(max_length=8, choices=WebhookFormat, default=WebhookFormat.PORTAL)
    # Long enough for a Teams workflow URL (host, path, api-version and sig parameters); blank for e-mail.
    url = models.URLField(max_length=1000, blank=True)
    email_to = models.CharField(
        "e-mail addresses",
        max_length=1000,
        blank=True,
        help_text="E-mail channels: where to send, separated by commas.",
    )
    # Kept in clear: it is needed to compute each signature (like any webhook secret).
    secret = models.CharField(max_length=200)
    event_types = models.JSONField(
        default=list, blank=True, help_text="Event types to send, e.g. restore_request.changed; empty = all."
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, related_name="webhooks", null=True, blank=True
    )
    application = models.ForeignKey(
        Application,
        on_delete=models.CASCADE,
        related_name="notification_channels",
        null=True,
        blank=True,
        help_text="An application's notification channel: hears only that application's events.",
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # URLField also accepts ftp:; a webhook is an HTTP POST, nothing else.
        if self.url and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValidationError({"url": "Use an http:// or https:// URL."})
        if not isinstance(self.event_types, list):
            raise ValidationError({"event_types": "A list of event types, or an empty list for all."})
        unknown = sorted(set(map(str, self.event_types)) - set(Event.values))
        if unknown:
            raise ValidationError({"event_types": f"Unknown event type(s): {', '.join(unknown)}."})
        if self.format == WebhookFormat.EMAIL:
            if not self.recipients:
                raise ValidationError({"email_to": "At least one e-mail address."})
        elif not self.url:
            raise ValidationError({"url": "A URL to POST to."})
        if self.format != WebhookFormat.PORTAL:
            # Chat and mail bodies exist for alerts and requests only (webhooks/chat.py).
            if not self.event_types or set(self.event_types) - set(CHANNEL_EVENTS):
                # Not keyed by field: the admin and the owners' form each have their own for it.
                raise ValidationError("A chat or e-mail channel carries alerts and request changes only.")
            if self.api_key_id:
                raise ValidationError({"api_key": "Integrations receive signed JSON: choose that format."})
        if self.application_id and self.format == WebhookFormat.PORTAL:
            raise ValidationError({"format": "An application's channel is Slack, Teams or e-mail."})

    @property
    def recipients(self) -> list[str]:
        return [address.strip() for address in self.email_to.replace(";", ",").split(",") if address.strip()]

    def wants(self, event: str) -> bool:
        return self.active and (not self.event_types or event in self.event_types)


class WebhookDelivery(models.Model):
    """One event for one subscription: the exact body signed and sent, and where its delivery stands."""

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.UUIDField(unique=True, editable=False, help_text="X-Portal-Delivery")
    event = models.CharField(max_length=64)
    body = models.TextField(help_text="The raw JSON body, exactly as signed and sent.")
    status = models.CharField(max_length=10, choices=DeliveryStatus, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The delivery worker: pending deliveries whose next attempt is due.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_pending_due_idx",
                condition=Q(status=DeliveryStatus.PENDING),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription}"


class WebhookAttempt(models.Model):
    """One try at delivering: when, what came back, how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["attempted_at"]

    def __str__(self) -> str:
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error[:40]}"
