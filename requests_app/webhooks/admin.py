"""The backup team's view of webhooks: subscriptions, every delivery and every attempt, and Redeliver.

The secret of a subscription is typed (or accepted as generated) on the add
page, where it can be copied into the receiving system; after that it is shown
masked everywhere, and the change page only takes a new one. Deliveries and
attempts are records written by the sender: view-only. Redeliver puts a
finished delivery back to pending under the same X-Portal-Delivery, because
receivers drop repeats by that id: a redelivery is the same event again, not a
new one.

Imported at the bottom of requests_app/admin.py, so these register with the rest.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.utils.html import format_html
from django.utils.text import Truncator

from catalog.admin import CatalogAdmin, nowrap
from catalog.admin_mixins import BackupTeamViewMixin, ReadOnlyAdminMixin
from catalog.formatting import human_age
from catalog.tenancy import is_backup_team
from requests_app.models import (
    ApiKey,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookFormat,
    WebhookSubscription,
)
from requests_app.webhooks import Event, delivery, destinations, signing

SECRET_MIN_LENGTH = 16


def masked(secret: str) -> str:
    """Enough to tell two secrets apart, too little to forge a signature."""
    return f"••••••••{secret[-4:]}" if secret else "—"


class WebhookAdmin(CatalogAdmin):
    """CatalogAdmin's permissions (the backup team) without its tenancy: webhooks are the team's business."""

    def get_queryset(self, request):
        qs = self.model._default_manager.get_queryset()
        ordering = self.get_ordering(request)
        return qs.order_by(*ordering) if ordering else qs


# --- Subscriptions -------------------------------------------------------------------------


class WebhookSubscriptionForm(forms.ModelForm):
    url = forms.URLField(
        label="URL",
        max_length=1000,
        required=False,
        assume_scheme="https",
        help_text="https:// (or http:// on a trusted network). Redirects are not followed. "
        "Empty for an e-mail channel.",
    )
    events = forms.MultipleChoiceField(
        choices=Event.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    new_secret = forms.CharField(
        label="New secret",
        required=False,
        min_length=SECRET_MIN_LENGTH,
        max_length=200,
        widget=forms.TextInput(attrs={"size": 60, "autocomplete": "off", "spellcheck": "false"}),
        help_text="Leave empty to keep the current secret.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ("name", "format", "application", "url", "email_to", "api_key", "active")
        labels = {"api_key": "Integration (API key)"}
        help_texts = {
            "format": "Signed JSON for integrations; Slack, Teams or e-mail for people "
            "(alerts and request changes only: docs/notifications.md).",
            "api_key": "Events are limited to what the key's user may see. "
            "Empty: the backup team's own subscription, which hears about everything.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Live keys, and the current one even if revoked since, so the form still saves.
        self.fields["api_key"].queryset = ApiKey.objects.filter(
            Q(revoked_at__isnull=True) | Q(pk=self.instance.api_key_id)
        )
        self.fields["format"].required = False  # empty: signed JSON, as before there were formats
        if self.instance.pk:
            self.fields["events"].initial = self.instance.event_types
            if self.instance.format in (WebhookFormat.SLACK, WebhookFormat.TEAMS):
                # A chat webhook URL is its channel's credential: shown masked, replaced, never read back.
                self.initial["url"] = ""
                self.fields["url"].label = "New URL"
                self.fields["url"].help_text = (
                    f"Now {destinations.masked_url(self.instance.url)}. Leave empty to keep it."
                )
        else:
            secret = self.fields["new_secret"]
            secret.label, secret.required, secret.initial = "Secret", True, signing.new_secret()
            secret.help_text = (
                "Generated; or paste your own (at least 16 characters). Copy it into the receiving "
                "system now: once saved it is only shown masked."
            )

    def clean(self):
        cleaned = super().clean()
        # Before the model's clean() runs (in _post_clean), which checks URL and events.
        self.instance.event_types = [value for value in Event.values if value in cleaned.get("events", ())]
        cleaned["format"] = cleaned.get("format") or WebhookFormat.PORTAL
        stored = WebhookSubscription.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        chat = stored and stored.format in (WebhookFormat.SLACK, WebhookFormat.TEAMS)
        if chat and not cleaned.get("url") and "url" not in self.errors:
            cleaned["url"] = stored.url  # kept: the field never shows it
        if cleaned.get("application") and cleaned.get("url"):
            try:
                destinations.validate(cleaned["url"], cleaned.get("format", ""))
            except forms.ValidationError as exc:
                self.add_error("url", exc)
        if cleaned.get("new_secret"):
            self.instance.secret = cleaned["new_secret"]
        return cleaned


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(WebhookAdmin):
    form = WebhookSubscriptionForm
    list_display = (
        "name",
        "format",
        "url_display",
        "event_list",
        "integration",
        "active",
        "pending",
        "failed",
        "secret_display",
    )
    list_filter = ("active", "format")
    list_select_related = ("api_key", "application")
    search_fields = ("name", "url", "application__slug")
    readonly_fields = ("secret_display", "created_at")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                pending_count=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.PENDING)),
                failed_count=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.FAILED)),
            )
        )

    def get_fieldsets(self, request, obj=None):
        what = ("name", "format", "application", "url", "email_to", "api_key", "events", "active")
        if obj is None:
            return ((None, {"fields": (*what, "new_secret")}),)
        return (
            (None, {"fields": what}),
            ("Signing", {"fields": ("secret_display", "new_secret")}),
            ("Record", {"fields": ("created_at",)}),
        )

    def get_deleted_objects(self, objs, request):
        # Django would list every delivery and attempt on the confirmation page: count them instead.
        objs = list(objs)
        deliveries = WebhookDelivery.objects.filter(subscription__in=objs).count()
        counts = {"webhook subscriptions": len(objs), "webhook deliveries (with their attempts)": deliveries}
        return [str(obj) for obj in objs], counts, set(), []

    @admin.display(description="where to")
    def url_display(self, obj):
        if obj.format == WebhookFormat.EMAIL:
            return ", ".join(obj.recipients)
        if obj.format == WebhookFormat.PORTAL:
            return obj.url
        return destinations.masked_url(obj.url)  # a chat webhook URL is a credential

    @admin.display(description="for", ordering="api_key__name")
    def integration(self, obj):
        if obj.application_id:
            return f"application {obj.application.slug}"
        return obj.api_key or "backup team"

    @admin.display(description="events")
    def event_list(self, obj):
        return ", ".join(obj.event_types) if obj.event_types else "all"

    @admin.display(description="pending", ordering="pending_count")
    def pending(self, obj):
        return obj.pending_count

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, obj):
        return obj.failed_count

    @admin.display(description="secret")
    def secret_display(self, obj):
        return masked(obj.secret)


# --- Deliveries ----------------------------------------------------------------------------


class WebhookAttemptInline(BackupTeamViewMixin, ReadOnlyAdminMixin, admin.TabularInline):
    """Every try, oldest first: when, what came back, how long it took."""

    model = WebhookAttempt
    fields = ("attempted_at", "status_code", "duration_ms", "error")
    readonly_fields = fields
    ordering = ("attempted_at", "pk")
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, WebhookAdmin):
    list_display = (
        "delivery_id",
        "event",
        "subscription",
        "status",
        "attempts",
        "created",
        "delivered_at",
        "next_attempt",
        "last_result",
    )
    list_filter = ("status", "event", "subscription")
    list_select_related = ("subscription",)
    search_fields = ("=delivery_id",)
    search_help_text = "The X-Portal-Delivery id, exactly."
    show_full_result_count = False
    ordering = ("-created_at", "-pk")
    fields = (
        "delivery_id",
        "event",
        "subscription",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "delivered_at",
        "last_status_code",
        "last_error",
        "body_display",
    )
    readonly_fields = fields
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver_selected",)

    # Written by the sender; the admin reads them (ReadOnlyAdminMixin) and redelivers, nothing else.
    def has_redeliver_permission(self, request):
        return is_backup_team(request.user)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return nowrap(human_age(obj.created_at))

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj):
        return obj.next_attempt_at if obj.status == DeliveryStatus.PENDING else "—"

    @admin.display(description="last result")
    def last_result(self, obj):
        if obj.last_status_code and not obj.last_error:
            return obj.last_status_code
        return Truncator(obj.last_error).chars(80) or "—"

    @admin.display(description="body (as signed and sent)")
    def body_display(self, obj):
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.body)

    @admin.action(description="Redeliver selected deliveries", permissions=["redeliver"])
    def redeliver_selected(self, request, queryset):
        selected = list(queryset.values_list("pk", flat=True))
        again = delivery.redeliver(selected)
        if again:
            ids = ", ".join(str(row.delivery_id) for row in again)
            self.message_user(request, f"Redelivering {len(again)} delivery(ies): {ids}.", messages.SUCCESS)
        if len(again) < len(selected):
            self.message_user(
                request,
                f"{len(selected) - len(again)} pending delivery(ies) left alone: they are retried anyway.",
                messages.WARNING,
            )
