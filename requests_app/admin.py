"""The backup team's approval queue: client and restore requests, and their audit trail.

Nothing here moves a request. Approve and Reject — bulk actions on the queue and
buttons on the change page — call ``requests_app.services``, which check the
state, the four eyes and who may decide, and write the audit event; the admin
only turns the domain errors into messages. The request fields are read-only
(the portal and the API make requests, the workflow moves them), audit events
are view-only for everybody, superusers included, and the one-time enrolment
secret of a client request appears on no page here: it is for the requester.
"""

from __future__ import annotations

import logging

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Value, When
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.views.decorators.http import require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from catalog.admin import CatalogAdmin, nowrap
from catalog.admin_mixins import BackupTeamViewMixin, NoDeleteMixin, ReadOnlyAdminMixin
from catalog.formatting import human_age
from catalog.tenancy import is_backup_team
from core.errors import MfaRequired
from identity import mfa
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.errors import FourEyesViolation, InvalidTransition, NotPermitted, ReasonRequired
from requests_app.models import ApiKey, AuditEvent, ClientRequest, RestoreRequest

logger = logging.getLogger(__name__)

#: What a decision may refuse with; each becomes a message, never a 500.
DECISION_ERRORS = (FourEyesViolation, NotPermitted, InvalidTransition, ReasonRequired, MfaRequired)

REASON_HELP = "The requester reads it, in the mail and on the request page."


# Red, because it replaces live data: the one thing to read twice before approving.
OVERWRITES = format_html('<strong style="color: var(--error-fg)">{}</strong>', "overwrites existing data")


RETIRES = format_html('<strong style="color: var(--error-fg)">{}</strong>', "retire")


def _label(obj) -> str:
    return f"{obj._meta.verbose_name.capitalize()} #{obj.pk}"


def _refusal(obj, exc: Exception) -> str:
    # InvalidTransition already names the request ("Restore request #13 is approved; …").
    text = str(exc)
    text = text if text.startswith(_label(obj)) else f"{_label(obj)}: {text}"
    if isinstance(exc, MfaRequired):
        opts = obj._meta
        change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        return mfa.refusal_html(text, change)
    return text


def _ids(objs) -> str:
    return ", ".join(f"#{obj.pk}" for obj in objs)


class RejectForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70}),
        help_text=REASON_HELP,
        error_messages={"required": "Say why the request is rejected: the requester reads it."},
    )


class WaitingForMeFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return (("me", "Waiting for me"),)

    def queryset(self, request, queryset):
        if self.value() != "me":
            return queryset
        # Four eyes: what someone submitted waits for the rest of the team, not for them.
        return queryset.filter(status=RequestStatus.SUBMITTED, needs_approval=True).exclude(
            requester=request.user
        )


class AuditEventInline(BackupTeamViewMixin, ReadOnlyAdminMixin, admin.TabularInline):
    """The request's history on its change page; AuditEvent has one foreign key per request model."""

    model = AuditEvent
    fields = ("occurred_at", "actor_label", "actor_kind", "channel", "action", "from_status", "to_status",
              "message")
    readonly_fields = fields
    ordering = ("occurred_at", "pk")
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "audit trail"

    def get_queryset(self, request):
        qs = AuditEvent.objects.visible_to(request.user).order_by(*self.ordering)
        return qs if self.has_view_permission(request) else qs.none()


class RequestAdmin(ReadOnlyAdminMixin, CatalogAdmin):
    """The queue of one kind of request, with Approve and Reject that go through the services."""

    change_form_template = "admin/requests_app/request_change_form.html"
    reject_template = "admin/requests_app/reject.html"
    inlines = (AuditEventInline,)
    actions = ("approve_selected", "reject_selected")
    list_display_links = ("id",)
    # The queue first (submitted), then the newest. People make requests, so the
    # table stays small enough to sort on an expression no index serves.
    ordering = (
        Case(When(status=RequestStatus.SUBMITTED, then=Value(0)), default=Value(1)).asc(),
        "-created_at",
    )
    common_fields = (
        "status", "needs_approval", "approval_rule", "requester", "external_ref", "created_at", "updated_at"
    )
    decision_fields = ("decided_by", "decided_at", "decision_reason")

    # Requests come from the portal and the API, the workflow moves them, and
    # they are records: the admin neither adds, edits nor deletes them (ReadOnlyAdminMixin).
    def has_decide_permission(self, request, obj=None):
        # The same rule the services enforce (Actor.is_backup_team), to hide what would be refused.
        return is_backup_team(request.user)

    # --- Columns ---------------------------------------------------------------------

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return nowrap(human_age(obj.created_at))

    @admin.display(description="approval", ordering="needs_approval")
    def approval(self, obj):
        # Words, not a boolean icon: a red cross would read as a failure, not "automatic".
        if not obj.needs_approval:
            return "automatic"
        # The rule's words in the queue: "web01 belongs to Payroll…" must be read before approving.
        return format_html('{}<br><span class="quiet">{}</span>', nowrap("backup team"), obj.approval_rule)

    @admin.display(description="ticket", ordering="external_ref")
    def ticket(self, obj):
        return obj.external_ref or "—"

    # --- Deciding ----------------------------------------------------------------------

    def get_urls(self):
        # Before Django's own: its "<path:object_id>/" would swallow these.
        return [
            path(
                "<path:object_id>/approve/",
                self.admin_site.admin_view(self.approve_view),
                name=self._url_name("approve"),
            ),
            path(
                "<path:object_id>/reject/",
                self.admin_site.admin_view(self.reject_view),
                name=self._url_name("reject"),
            ),
            *super().get_urls(),
        ]

    def _url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def _url(self, view: str, *args) -> str:
        return reverse(f"admin:{self._url_name(view)}", args=args)

    def _actor(self, request) -> Actor:
        return Actor.signed_in(request, Channel.ADMIN)

    def _change_url(self, obj) -> str:
        return self._url("change", obj.pk)

    def _decidable(self, request, object_id):
        """The request the user may decide, or None; raises PermissionDenied for anyone else."""
        if not self.has_decide_permission(request):
            raise PermissionDenied
        return self.get_object(request, unquote(object_id))

    def approved_message(self, obj) -> str:
        return f"{_label(obj)} is {obj.get_status_display().lower()}."

    def _approve(self, request, obj):
        """Approve one request: (the approved request, None) or (None, why not)."""
        try:
            return services.approve(self.model, obj.pk, actor=self._actor(request)), None
        except DECISION_ERRORS as exc:
            return None, _refusal(obj, exc)

    def _reject(self, request, obj, reason: str):
        try:
            return services.reject(self.model, obj.pk, actor=self._actor(request), reason=reason), None
        except DECISION_ERRORS as exc:
            return None, _refusal(obj, exc)

    @method_decorator(require_POST)
    def approve_view(self, request, object_id):
        obj = self._decidable(request, object_id)
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        approved, refusal = self._approve(request, obj)
        if approved is not None:
            self.message_user(request, self.approved_message(approved), messages.SUCCESS)
        else:
            self.message_user(request, refusal, messages.ERROR)
        return redirect(self._change_url(obj))

    def reject_view(self, request, object_id):
        obj = self._decidable(request, object_id)
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        form = RejectForm(request.POST if request.method == "POST" else None)
        if not form.is_valid():
            return self._reject_page(request, form, [obj], bulk=False)
        rejected, refusal = self._reject(request, obj, form.cleaned_data["reason"])
        if rejected is not None:
            self.message_user(request, f"{_label(obj)} is rejected.", messages.SUCCESS)
        else:
            self.message_user(request, refusal, messages.ERROR)
        return redirect(self._change_url(obj))

    def _decide_each(self, request, queryset, decide, verb: str) -> None:
        """Decide every selected request on its own; report what was done and each refusal."""
        done, refused = [], []
        for obj in queryset:
            decided, refusal = decide(obj)
            if decided is not None:
                done.append(decided)
            else:
                refused.append(refusal)
        if done:
            self.message_user(request, f"{verb} {len(done)} request(s): {_ids(done)}.", messages.SUCCESS)
        for refusal in refused:
            self.message_user(request, refusal, messages.ERROR)

    @admin.action(description="Approve selected requests", permissions=["decide"])
    def approve_selected(self, request, queryset):
        self._decide_each(request, queryset, lambda obj: self._approve(request, obj), "Approved")

    @admin.action(description="Reject selected requests…", permissions=["decide"])
    def reject_selected(self, request, queryset):
        # Like Django's delete_selected: the first POST shows the reason page, and
        # that page posts the same action back with the ids, "post" and the reason.
        form = RejectForm(request.POST if "post" in request.POST else None)
        if not form.is_valid():
            return self._reject_page(request, form, list(queryset), bulk=True)
        reason = form.cleaned_data["reason"]
        self._decide_each(request, queryset, lambda obj: self._reject(request, obj, reason), "Rejected")
        return None  # back to the changelist

    def _reject_page(self, request, form, objs, *, bulk: bool):
        context = {
            **self.admin_site.each_context(request),
            "title": "Reject requests" if bulk else f"Reject {_label(objs[0]).lower()}",
            "opts": self.opts,
            "form": form,
            "rows": [(obj, obj.status == RequestStatus.SUBMITTED) for obj in objs],
            "bulk": bulk,
            "obj": None if bulk else objs[0],
            "back_url": self._url("changelist") if bulk else self._change_url(objs[0]),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.reject_template, context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.status == RequestStatus.SUBMITTED and self.has_decide_permission(request):
            context["decision"] = {
                "approve_url": self._url("approve", obj.pk),
                "reject_url": self._url("reject", obj.pk),
                "own": obj.requester_id == request.user.pk,
            }
        return super().render_change_form(request, context, add, change, form_url, obj)


@admin.register(ClientRequest)
class ClientRequestAdmin(RequestAdmin):
    list_display = ("id", "summary", "requester", "status", "approval", "ticket", "age")
    list_filter = (
        WaitingForMeFilter,
        "action",
        "status",
        "needs_approval",
        ("application", admin.RelatedOnlyFieldListFilter),
        "plugin",
    )
    list_select_related = ("application", "policy", "requester")
    search_fields = ("name", "hostname", "external_ref", "=application__slug", "requester__username")
    search_help_text = "Client name, host name, ticket, application slug (exact) or requester."
    fieldsets = (
        (None, {"fields": RequestAdmin.common_fields}),
        ("What", {"fields": ("action", "application", "name", "hostname", "plugin", "options", "policy",
                             "justification")}),
        ("Decision", {"fields": RequestAdmin.decision_fields}),
        ("Outcome", {"fields": ("client", "enrolment", "error")}),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    @admin.display(description="what")
    def summary(self, obj):
        # A retire is marked, to be read twice before approving: it ends the client's backups and may
        # revoke the host's agent.
        return format_html(
            '{}{}/{} on {}<br><span class="quiet">{} · {}</span>',
            format_html("{} ", RETIRES) if obj.is_retire else "",
            obj.application.slug,
            obj.name,
            obj.hostname,
            obj.get_plugin_display(),
            obj.policy.name,
        )


#: The paths of a selective restore the admin shows; the rest are counted.
SELECTION_SHOWN = 20


@admin.register(RestoreRequest)
class RestoreRequestAdmin(RequestAdmin):
    list_display = (
        "id",
        "backup_summary",
        "target",
        "requester",
        "status",
        "approval",
        "ticket",
        "age",
    )
    list_filter = (
        WaitingForMeFilter,
        "status",
        "needs_approval",
        "overwrite",
        ("backup__client__application", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("backup__client__application", "target_agent", "requester")
    search_fields = (
        "external_ref",
        "target_location",
        "target_agent__hostname",
        "backup__client__name",
        "=backup__client__application__slug",
        "requester__username",
    )
    search_help_text = "Ticket, target path or host, client name, application slug (exact) or requester."
    fieldsets = (
        (None, {"fields": RequestAdmin.common_fields}),
        (
            "What",
            {
                "fields": (
                    "backup",
                    "target_agent",
                    "target_location",
                    "selection",
                    "overwrite_display",
                    "reason",
                )
            },
        ),
        ("Decision", {"fields": RequestAdmin.decision_fields}),
        ("Outcome", {"fields": ("job", "error")}),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    def approved_message(self, obj) -> str:
        return f"{super().approved_message(obj)} Restore job #{obj.job_id} is queued."

    @admin.display(description="backup")
    def backup_summary(self, obj):
        backup = obj.backup
        return format_html(
            '<span class="nowrap">{}</span><br><span class="quiet">{}</span>',
            backup.client,
            nowrap(f"taken {human_age(backup.taken_at)}"),
        )

    @admin.display(description="restore to")
    def target(self, obj):
        return format_html(
            '{}<br><span class="quiet">{}</span>{}',
            obj.target_agent.hostname,
            obj.target_location,
            format_html("<br>{}", OVERWRITES) if obj.overwrite else "",
        )

    @admin.display(description="overwrite")
    def overwrite_display(self, obj):
        return OVERWRITES if obj.overwrite else "No"

    @admin.display(description="selected")
    def selection(self, obj):
        """A selective restore's paths (the first 20), or the whole recovery point."""
        if not obj.paths:
            return "Everything: the whole recovery point"
        more = len(obj.paths) - SELECTION_SHOWN
        shown = ((path,) for path in obj.paths[:SELECTION_SHOWN])
        return format_html(
            "{}{}",
            format_html_join(format_html("<br>"), "<code>{}</code>", shown),
            format_html('<br><span class="quiet">and {} more</span>', more) if more > 0 else "",
        )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, CatalogAdmin):
    """The audit trail, to read: append-only in the model, view-only here for everybody."""

    list_display = ("occurred_at", "request_link", "application", "actor", "action", "transition", "summary")
    list_filter = ("channel", "actor_kind", "action")
    list_select_related = ("application",)
    search_fields = ("actor_label",)
    date_hierarchy = "occurred_at"
    show_full_result_count = False
    ordering = ("-occurred_at", "-pk")
    fields = (
        "occurred_at",
        "application",
        "client_request",
        "restore_request",
        "actor_kind",
        "actor_user",
        "actor_label",
        "channel",
        "action",
        "from_status",
        "to_status",
        "message",
    )
    readonly_fields = fields

    @admin.display(description="request")
    def request_link(self, obj):
        # From the ids: no join, and the request's own __str__ would need its application.
        if obj.client_request_id:
            model, pk = ClientRequest, obj.client_request_id
        else:
            model, pk = RestoreRequest, obj.restore_request_id
        url = reverse(f"admin:requests_app_{model._meta.model_name}_change", args=[pk])
        return format_html('<a href="{}">{}</a>', url, nowrap(f"{model.kind.capitalize()} #{pk}"))

    @admin.display(description="who", ordering="actor_label")
    def actor(self, obj):
        how = nowrap(f"{obj.get_actor_kind_display()}, {obj.get_channel_display()}")
        return format_html('{}<br><span class="quiet">{}</span>', obj.actor_label, how)

    @admin.display(description="from → to")
    def transition(self, obj):
        if not obj.to_status:
            return "—"
        before = obj.get_from_status_display() or "—"
        return nowrap(f"{before} → {obj.get_to_status_display()}")

    @admin.display(description="message")
    def summary(self, obj):
        return Truncator(obj.message).chars(80) or "—"


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name", "user", "integration")


@admin.register(ApiKey)
class ApiKeyAdmin(NoDeleteMixin, admin.ModelAdmin):  # requests and audit events name a key: revoke it
    """Integrations' keys: created here or with ``manage.py create_api_key``; the key is shown once."""

    form = ApiKeyForm
    list_display = ("name", "user", "integration", "prefix", "created_at", "last_used", "revoked_at")
    list_filter = ("integration", ("revoked_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = ("prefix", "integration", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def get_readonly_fields(self, request, obj=None):
        # Whether a key may approve without a person's MFA is decided when it is issued: a key that
        # should change role is revoked and a new one issued, so no key quietly gains the power.
        return self.readonly_fields if obj else tuple(f for f in self.readonly_fields if f != "integration")

    def has_module_permission(self, request) -> bool:
        return is_backup_team(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_backup_team(request.user)

    def has_add_permission(self, request) -> bool:
        return is_backup_team(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return is_backup_team(request.user) and obj is None

    @admin.display(description="last used")
    def last_used(self, obj: ApiKey) -> str:
        return human_age(obj.last_used_at)

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if change:
            return
        record, key = ApiKey.issue(user=obj.user, name=obj.name, integration=obj.integration)
        obj.pk = record.pk
        self.message_user(
            request,
            f"API key for {record.name}: {key} — copy it now, it is not shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} key(s); their next call gets 401.", messages.SUCCESS)



# --- People's authenticators (identity/mfa.py) ---------------------------------------------------
# Here, beside the integrations' keys, and not in identity/admin.py: identity sits below catalog
# (tests/core/test_dependencies.py) and the team's permissions are catalog's.
#
# django-otp's own admin shows and edits each device's secret and QR code; it is replaced by a
# list without them. The one change is a reset (the person sets a new authenticator up at
# /account/mfa/), itself a four-eyes action: by another member of the team, from a session that
# passed MFA — or anybody holding a member's password could reset that member's device and enrol
# their own.

if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(BackupTeamViewMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """People's authenticators: listed, never shown; reset by another member of the team."""

    list_display = ("user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count")
    list_filter = ("confirmed",)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    fields = list_display
    readonly_fields = list_display
    actions = ("reset",)

    def has_module_permission(self, request) -> bool:
        return is_backup_team(request.user)

    def has_reset_permission(self, request) -> bool:
        return is_backup_team(request.user)

    @admin.action(description="Reset: the person sets up a new authenticator", permissions=["reset"])
    def reset(self, request, queryset) -> None:
        try:
            mfa.require_mfa(request, "resetting an authenticator")
        except MfaRequired as exc:
            self.message_user(request, mfa.refusal_html(str(exc), request.get_full_path()), messages.ERROR)
            return
        if queryset.filter(user=request.user).exists():
            refusal = "Nobody resets their own authenticator: another member of the team must."
            self.message_user(request, refusal, messages.ERROR)
            return
        users = sorted({device.user.get_username() for device in queryset})
        count, _ = queryset.delete()
        logger.info("MFA devices of %s reset by %s", ", ".join(users), request.user.get_username())
        self.message_user(
            request,
            f"Reset {count} authenticator(s) of {', '.join(users)}: they set up a new one at /account/mfa/.",
            messages.SUCCESS,
        )


from requests_app.webhooks import admin as webhooks_admin  # noqa: E402, F401 - registers the webhook admins
