"""The Django admin for the backup team: the whole catalog, built to stay fast at millions of rows.

Rules every ModelAdmin here follows:

- rows come from ``Model.objects.visible_to(user)`` (tenancy lives in the queryset);
- a changelist costs the same number of queries whatever the row count: foreign
  keys shown in a column are in ``list_select_related``, many-to-many columns are
  prefetched, "last backup" is a correlated subquery;
- foreign keys to big tables (agents, clients, jobs, backups) are autocomplete
  or read-only, never a <select> of every row;
- lifecycle fields (job state, backup status, alert resolution) are read-only:
  the services own the transitions.
"""

from __future__ import annotations

import functools
import operator
import shlex

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, F, OuterRef, Prefetch, Q, Subquery
from django.db.models.deletion import PROTECT
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from catalog import agent_versions, levels
from catalog.admin_mixins import (
    BackupTeamViewMixin,
    NoAddMixin,
    NoChangeMixin,
    NoDeleteMixin,
    ReadOnlyAdminMixin,
)
from catalog.allow_list import describe as describe_allow_list
from catalog.choices import AgentAction, AgentStatus, BackupLevel, BackupStatus, JobTrigger, Verification
from catalog.errors import InvalidTransition
from catalog.formatting import human_age, human_duration, human_size
from catalog.models import (
    Agent,
    AgentEvent,
    Alert,
    Application,
    Backup,
    BackupClient,
    CostCenter,
    EnrolmentToken,
    Job,
    OrphanArchive,
    ProtectionPolicy,
    StorageTarget,
)
from catalog.services import agents, alerts, anomalies, capacity, chains, hosts, jobs, retention
from catalog.tenancy import is_backup_team
from core.errors import MfaRequired
from identity import mfa

#: How many protected dependents a delete page probes for before it stops counting.
PROTECTED_SAMPLE = 10


def _all_field_names(model) -> tuple[str, ...]:
    return tuple(f.name for f in model._meta.get_fields() if f.concrete and not f.auto_created)


def nowrap(text: str) -> str:
    """Keep "7.0 GiB" and "1d 2h ago" on one line in narrow columns."""
    return text.replace(" ", "\N{NO-BREAK SPACE}")


class CatalogAdmin(admin.ModelAdmin):
    """Tenancy, backup-team permissions and scale-safe delete pages for every catalog admin."""

    def get_queryset(self, request):
        # No select_related() here or in subclasses: the changelist applies
        # list_select_related only to a queryset that has none yet.
        qs = self.model.objects.visible_to(request.user)
        ordering = self.get_ordering(request)
        if ordering:
            qs = qs.order_by(*ordering)
        return qs

    def get_field_queryset(self, db, db_field, request):
        # Choices and autocomplete validation obey tenancy too, in the related admin's order.
        related = db_field.remote_field.model
        if not hasattr(related._default_manager, "visible_to"):
            return super().get_field_queryset(db, db_field, request)
        qs = related._default_manager.using(db).visible_to(request.user)
        if self.admin_site.is_registered(related):
            ordering = self.admin_site.get_model_admin(related).get_ordering(request)
            if ordering:
                qs = qs.order_by(*ordering)
        return qs

    # The backup team is defined once, in catalog.tenancy; Django's model
    # permissions still work for anybody else (an auditor with view rights).
    def has_module_permission(self, request):
        return is_backup_team(request.user) or super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return is_backup_team(request.user) or super().has_view_permission(request, obj)

    def has_add_permission(self, request):
        return is_backup_team(request.user) or super().has_add_permission(request)

    def has_change_permission(self, request, obj=None):
        return is_backup_team(request.user) or super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return is_backup_team(request.user) or super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # Django's delete page loads and prints every protected dependent: for a
        # storage target that is millions of backups. Probe each protected
        # relation with a LIMIT instead and refuse early.
        protected = self._protected_dependents(objs)
        if protected:
            return [], {}, set(), protected
        return super().get_deleted_objects(objs, request)

    def _protected_dependents(self, objs) -> list[str]:
        found = []
        pks = [obj.pk for obj in objs]  # one object, or the selected page of a changelist
        for rel in self.model._meta.related_objects:
            if rel.many_to_many or rel.on_delete is not PROTECT:
                continue
            dependents = rel.related_model._base_manager.filter(**{f"{rel.field.name}__in": pks})
            n = len(dependents.values_list("pk", flat=True)[: PROTECTED_SAMPLE + 1])
            if n:
                count = f"more than {PROTECTED_SAMPLE}" if n > PROTECTED_SAMPLE else str(n)
                found.append(f"{count} {rel.related_model._meta.verbose_name_plural} ({rel.field.name})")
        return found


# --- Reference data ----------------------------------------------------------------


@admin.register(CostCenter)
class CostCenterAdmin(CatalogAdmin):
    list_display = ("code", "name", "owner_email", "application_count")
    search_fields = ("code", "name", "owner_email")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(application_count=Count("applications"))

    @admin.display(description="applications", ordering="application_count")
    def application_count(self, obj):
        return obj.application_count


@admin.register(Application)
class ApplicationAdmin(CatalogAdmin):
    list_display = ("slug", "name", "cost_center", "owner_list", "owner_group", "created_at")
    list_filter = ("cost_center",)
    list_select_related = ("cost_center", "owner_group")
    search_fields = ("slug", "name", "cost_center__code")
    autocomplete_fields = ("owners",)
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        from django.contrib.auth import get_user_model

        owners = get_user_model().objects.only("pk", "username").order_by("username")
        return super().get_queryset(request).prefetch_related(Prefetch("owners", queryset=owners))

    @admin.display(description="owners")
    def owner_list(self, obj):
        return ", ".join(user.username for user in obj.owners.all()) or "—"


@admin.register(StorageTarget)
class StorageTargetAdmin(CatalogAdmin):
    list_display = (
        "name",
        "kind",
        "location",
        "capacity",
        "used",
        "used_percent",
        "compression",
        "keep_uncompressed",
    )
    list_filter = ("kind", "compression", "keep_uncompressed")
    search_fields = ("name", "location")

    @admin.display(description="capacity", ordering="capacity_bytes")
    def capacity(self, obj):
        return nowrap(human_size(obj.capacity_bytes))

    @admin.display(description="used", ordering="used_bytes")
    def used(self, obj):
        return nowrap(human_size(obj.used_bytes))

    @admin.display(description="used %")
    def used_percent(self, obj):
        return f"{obj.used_fraction:.0%}"

    readonly_fields = ("capacity_forecast",)

    def get_list_display(self, request):
        """Adds "full in": every target's forecast computed once per changelist (constant queries), lazily."""
        forecasts = functools.cache(lambda: {f.target_id: f for f in capacity.forecast_all()})

        @admin.display(description="full in")
        def full_in(obj):
            result = forecasts().get(obj.pk)
            if result is None or result.reason:
                return format_html('<span title="{}">—</span>', result.reason if result else "")
            if result.full_on is None:
                return nowrap(f"> {result.horizon_days // 365} years")
            return format_html(
                '<span title="{}">{}</span>', capacity.describe(result), nowrap(_days(result.days_until_full))
            )

        return (*self.list_display, full_in)

    @admin.display(description="capacity forecast")
    def capacity_forecast(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        result = capacity.forecast(obj)
        if result.reason:
            return f"No forecast: {result.reason}."
        if result.full_on is None:
            return (
                f"Not full within {result.horizon_days // 365} years: {capacity.describe_rates(result)} "
                f"(docs/capacity.md)."
            )
        return f"{capacity.describe(result)} (docs/capacity.md)"


def _days(days: float | None) -> str:
    if not days:
        return "full now"
    return f"{days:.0f} day{'s' if days != 1 else ''}"


@admin.register(ProtectionPolicy)
class ProtectionPolicyAdmin(CatalogAdmin):
    list_display = (
        "name",
        "schedule",
        "level_scheme",
        "retention_days",
        "rpo_hours",
        "storage_target",
        "restore_test_interval_days",
        "max_retries",
        "price_per_gb_month",
        "auto_approve_clients",
    )
    list_filter = ("auto_approve_clients", "storage_target")
    list_select_related = ("storage_target",)
    search_fields = ("name", "description")
    fieldsets = (
        (None, {"fields": ("name", "description", "storage_target", "price_per_gb_month",
                           "auto_approve_clients")}),
        ("Schedule and retention", {"fields": ("schedule", "retention_days", "rpo_hours",
                                               "restore_test_interval_days", "max_retries")}),
        ("Backup levels", {
            "fields": ("full_every_days", "full_every_backups"),
            "description": "Both empty: every backup is a full (existing policies stay so until changed). "
            "Otherwise file backups take incrementals between fulls: a full when the chain's full is that "
            "many days old, or when the chain holds that many backups, whichever comes first. "
            + levels.ONLY_FILES_INCREMENTAL,
        }),
    )  # fmt: skip

    @admin.display(description="levels")
    def level_scheme(self, obj):
        return levels.level_scheme(obj)


# --- Agents ------------------------------------------------------------------------


class AgentStatusFilter(admin.SimpleListFilter):
    # Mirrors Agent.status (a Python property) as SQL.
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return AgentStatus.choices

    def queryset(self, request, queryset):
        return queryset.with_status(self.value()) if self.value() else queryset


class AgentVersionFilter(admin.SimpleListFilter):
    """current / outdated / unsupported (catalog.agent_versions): versions compared as numbers, in Python.

    An estate runs a handful of agent versions: one query lists them, and the filter is a
    plain ``IN`` on the (version, protocol) pairs that have the chosen status.
    """

    title = "agent version"
    parameter_name = "version_status"

    def lookups(self, request, model_admin):
        return [
            (agent_versions.CURRENT, f"current ({agent_versions.shipped_version()})"),
            (agent_versions.OUTDATED, "outdated (an upgrade is available)"),
            (agent_versions.UNSUPPORTED, "unsupported (refused)"),
            (agent_versions.UNKNOWN, "not reported yet (never polled)"),
        ]

    def queryset(self, request, queryset):
        wanted = self.value()
        if wanted not in agent_versions.STATUSES:
            return queryset
        pairs = set(queryset.order_by().values_list("version", "protocol").distinct())
        matching = (
            Q(version=version, protocol=protocol)
            for version, protocol in pairs
            if agent_versions.status(version, protocol) == wanted
        )
        return queryset.filter(functools.reduce(operator.or_, matching, Q(pk__in=[])))


class AgentEventInline(BackupTeamViewMixin, NoAddMixin, NoChangeMixin, NoDeleteMixin, admin.TabularInline):
    """The agent's audit trail, for the team that decides who a host serves: read-only, append-only."""

    model = AgentEvent
    fields = ("occurred_at", "action", "actor_label", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-occurred_at", "-pk")


class AgentForm(forms.ModelForm):
    """Giving a host to an application (sharing it, or assigning it) is a four-eyes action: MFA first."""

    request = None  # the admin's request, set by AgentAdmin.get_form

    def clean_applications(self):
        applications = self.cleaned_data["applications"]
        before = set(self.instance.applications.values_list("pk", flat=True)) if self.instance.pk else set()
        # Taking applications away hands the host to nobody new: only additions need the proof.
        if {app.pk for app in applications} - before:
            try:
                mfa.require_mfa(self.request, "giving a host to an application")
            except MfaRequired as exc:
                raise forms.ValidationError(mfa.refusal_html(str(exc), self.request.get_full_path())) from exc
        return applications


@admin.register(Agent)
class AgentAdmin(CatalogAdmin):
    """Which applications a host serves is decided here, by the team, and every change is audited."""

    form = AgentForm

    list_display = (
        "hostname",
        "status_display",
        "application_list",
        "version_display",
        "auto_upgrade",
        "last_seen",
        "enrolled_at",
        "revoked_at",
    )
    list_filter = (AgentStatusFilter, AgentVersionFilter, "auto_upgrade", "version")
    search_fields = ("hostname",)
    autocomplete_fields = ("applications",)
    # token_hash is not editable on the model, so it is in no form; it is in no list either.
    readonly_fields = (
        "status_display",
        "version_display",
        "protocol",
        "plugins",
        "allow_list_display",
        "enrolled_at",
        "last_seen_at",
        "revoked_at",
    )
    fields = ("hostname", "applications", "auto_upgrade", *readonly_fields)
    actions = ("revoke_token", "issue_rekey_token")
    inlines = (AgentEventInline,)

    def get_queryset(self, request):
        applications = Application.objects.only("pk", "slug").order_by("slug")
        return super().get_queryset(request).prefetch_related(
            Prefetch("applications", queryset=applications)
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def get_readonly_fields(self, request, obj=None):
        # A host name is the agent's identity: renaming one would hand its jobs to another server.
        fields = ("hostname", *self.readonly_fields) if obj else self.readonly_fields
        # Upgrading a server's software without its administrator is the backup team's decision alone.
        return fields if is_backup_team(request.user) else ("auto_upgrade", *fields)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "auto_upgrade" in form.changed_data:
            state = "on" if obj.auto_upgrade else "off"
            agents.record(
                obj, AgentAction.AUTO_UPGRADE, user=request.user, message=f"automatic upgrade {state}"
            )

    def save_related(self, request, form, formsets, change):
        before = set(form.instance.applications.values_list("slug", flat=True)) if change else set()
        super().save_related(request, form, formsets, change)
        after = set(form.instance.applications.values_list("slug", flat=True))
        hosts.record_team_change(form.instance, before, after, user=request.user)

    @admin.display(description="status")
    def status_display(self, obj):
        return AgentStatus(obj.status).label

    @admin.display(description="version", ordering="version")
    def version_display(self, obj):
        status = obj.version_status
        version = obj.version or "—"
        if status == agent_versions.UNSUPPORTED:
            return format_html(
                "{} <strong>unsupported</strong> (protocol {}; refused: this portal speaks {} or newer)",
                version,
                obj.protocol,
                Agent.OLDEST_PROTOCOL,
            )
        if status == agent_versions.OUTDATED:
            return format_html(
                "{} <strong>outdated</strong> ({} available)", version, agent_versions.shipped_version()
            )
        return version

    @admin.display(description="allow-list (as the agent reports it)")
    def allow_list_display(self, obj):
        return describe_allow_list(obj.allow_list)

    @admin.display(description="applications")
    def application_list(self, obj):
        return ", ".join(app.slug for app in obj.applications.all()) or "—"

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, obj):
        return nowrap(human_age(obj.last_seen_at))

    @admin.action(description="Revoke token", permissions=["change"])
    def revoke_token(self, request, queryset):
        revoked = agents.revoke(queryset, by=request.user)
        self.message_user(
            request,
            f"Revoked the token of {revoked} agent(s); they can no longer poll or report.",
            messages.SUCCESS,
        )

    @admin.action(description="Issue a re-key token (a rebuilt server)", permissions=["change"])
    def issue_rekey_token(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Re-key one agent at a time.", messages.ERROR)
            return None
        agent = queryset.get()
        enrolment, token = agents.issue_rekey_token(agent, created_by=request.user)
        command = shlex.join(
            ["backup-agent", "enrol", "--server", settings.PORTAL_BASE_URL, "--token", token,
             "--hostname", agent.hostname, "--force"]
        )
        # Rendered, not put in a message: messages are stored (cookie or session) until shown.
        response = TemplateResponse(
            request,
            "admin/catalog/agent/rekey_token.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "agent": agent,
                "enrolment": enrolment,
                "command": command,
                "title": f"Re-key {agent.hostname}",
            },
        )
        add_never_cache_headers(response)
        return response


@admin.register(EnrolmentToken)
class EnrolmentTokenAdmin(NoAddMixin, CatalogAdmin):
    """Tokens are issued by the services (a request's requester, or the re-key action on an agent)
    because the clear text is shown once; only hashes are here."""

    list_display = (
        "hostname",
        "purpose",
        "application",
        "state",
        "created_at",
        "expires_at",
        "used_at",
        "agent",
        "created_by",
    )
    list_filter = (("used_at", admin.EmptyFieldListFilter), "purpose")
    list_select_related = ("application", "agent", "created_by")
    search_fields = ("hostname", "application__slug")
    date_hierarchy = "created_at"
    readonly_fields = (
        "hostname",
        "purpose",
        "application",
        "state",
        "created_at",
        "created_by",
        "used_at",
        "voided_at",
        "agent",
    )
    fields = ("expires_at", *readonly_fields)

    @admin.display(description="state")
    def state(self, obj):
        if obj.used_at:
            return "used"
        if obj.voided_at:
            return "void"
        return "expired" if obj.expires_at <= timezone.now() else "waiting"


@admin.register(OrphanArchive)
class OrphanArchiveAdmin(ReadOnlyAdminMixin, CatalogAdmin):
    """Archives an agent still finds on storage that no backup explains (catalog.services.orphans).

    Read-only: the agents' reports add and forget them; after the grace period the agent
    is told to remove one. The agent filter counts each agent's orphans (facets).
    """

    list_display = ("agent", "location", "size", "found", "last_seen", "removal_due_at")
    list_filter = (("agent", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("agent",)
    search_fields = ("location", "agent__hostname")
    show_facets = admin.ShowFacets.ALWAYS
    show_full_result_count = False
    readonly_fields = (*_all_field_names(OrphanArchive), "size")

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return nowrap(human_size(obj.size_bytes))

    @admin.display(description="found", ordering="found_at")
    def found(self, obj):
        return nowrap(human_age(obj.found_at))

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, obj):
        return nowrap(human_age(obj.last_seen_at))


# --- Clients -----------------------------------------------------------------------

OPTIONS_HELP = (
    'A JSON object, checked against the plugin. files: {"paths": ["/srv/app"], "exclude": ["*.tmp"]}; '
    'postgresql / mysql: {"database": "orders", "host": "db01", "port": 5432, "user": "backup"}; '
    'command: {"backup_argv": ["/usr/local/bin/dump", "{target}"], "restore_argv": [...]}.'
)


class BackupClientAdminForm(forms.ModelForm):
    class Meta:
        model = BackupClient
        fields = ("application", "name", "hostname", "agent", "plugin", "options", "policy", "status")
        help_texts = {"options": OPTIONS_HELP}


@admin.register(BackupClient)
class BackupClientAdmin(CatalogAdmin):
    form = BackupClientAdminForm
    list_display = (
        "__str__",
        "hostname",
        "agent",
        "plugin",
        "policy",
        "status",
        "last_backup",
        "next_backup_at",
    )
    list_filter = ("status", "plugin", "policy")
    list_select_related = ("application", "agent", "policy")
    search_fields = ("name", "hostname", "application__slug", "agent__hostname")
    autocomplete_fields = ("application", "agent")
    actions = ("backup_now",)

    @admin.action(description="Back up now")
    def backup_now(self, request, queryset):
        queued, already, refused = 0, [], []
        for client in queryset.select_related("application"):
            try:
                job, created = jobs.get_or_queue_backup(
                    client, trigger=JobTrigger.USER, requested_by=request.user
                )
            except InvalidTransition as exc:
                refused.append(str(exc))
                continue
            if created:
                queued += 1
            else:
                already.append(f"{client} (job {job.pk}, {job.get_state_display().lower()})")
        if queued:
            self.message_user(request, f"Queued a backup of {queued} client(s).", messages.SUCCESS)
        if already:
            self.message_user(
                request, f"A backup is already queued or running for {', '.join(already)}.", messages.INFO
            )
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    def get_queryset(self, request):
        # A correlated subquery on backup_client_recent_idx, evaluated for the
        # page's rows only; a Max() join would aggregate every backup per page.
        last_available = (
            Backup.objects.filter(client=OuterRef("pk"), status=BackupStatus.AVAILABLE)
            .order_by("-taken_at")
            .values("taken_at")[:1]
        )
        return super().get_queryset(request).annotate(last_backup_at=Subquery(last_available))

    def get_readonly_fields(self, request, obj=None):
        # Creating a client sets its first status; after that only the services move it.
        if obj is None:
            return ("next_backup_at", "created_at")
        return ("status", "last_backup", "next_backup_at", "created_at")

    @admin.display(description="last backup", ordering=F("last_backup_at").asc(nulls_first=True))
    def last_backup(self, obj):
        return nowrap(human_age(getattr(obj, "last_backup_at", None)))


# --- Jobs and backups (the catalog proper: read-only, millions of rows) -----------------


@admin.register(Job)
class JobAdmin(ReadOnlyAdminMixin, CatalogAdmin):  # the lifecycle belongs to catalog.services.jobs
    list_display = (
        "id",
        "kind",
        "client",
        "agent",
        "state",
        "attempt",
        "trigger",
        "level",
        "created",
        "duration_display",
        "bytes_done_display",
        "error_class",
    )
    list_filter = ("state", "kind", "trigger", "level", "error_class")
    list_select_related = ("client__application", "agent")
    search_fields = ("client__name", "=client__application__slug", "agent__hostname")
    search_help_text = "Client name, application slug (exact) or agent host name."
    date_hierarchy = "created_at"
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("kind", "state", "trigger", "attempt", "retry_of", "requested_by")}),
        ("Where", {"fields": ("client", "agent", "backup", "target_location", "overwrite", "paths")}),
        ("Backup level", {"fields": ("level", "base", "level_reason")}),
        ("When", {"fields": ("created_at", "not_before", "started_at", "finished_at",
                             "duration_display", "lease_expires_at", "cancel_requested_at")}),
        ("The agent's clock (information only)", {"fields": ("reported_started_at", "reported_finished_at")}),
        ("Progress", {"fields": ("bytes_done", "bytes_done_display", "bytes_total")}),
        ("Failure", {"fields": ("error_class", "error_message", "log_tail")}),
    )
    readonly_fields = (*_all_field_names(Job), "duration_display", "bytes_done_display")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return nowrap(human_age(obj.created_at))

    @admin.display(description="duration")
    def duration_display(self, obj):
        return nowrap(human_duration(obj.duration))

    @admin.display(description="bytes done", ordering="bytes_done")
    def bytes_done_display(self, obj):
        return nowrap(human_size(obj.bytes_done))


LEGAL_HOLD_HELP = (
    "A hold holds the chain: the full and every incremental this point builds on stay available "
    "(and expired ones come back) while it is held, because it cannot be restored without them."
)


class BackupAdminForm(forms.ModelForm):
    class Meta:
        model = Backup
        fields = ("legal_hold", "legal_hold_reason")
        help_texts = {"legal_hold": LEGAL_HOLD_HELP}

    def clean(self):
        cleaned = super().clean()
        # Says what backup_legal_hold_has_reason would refuse, next to the field.
        if cleaned.get("legal_hold") and not cleaned.get("legal_hold_reason", "").strip():
            self.add_error("legal_hold_reason", "Say why the backup is on legal hold.")
        return cleaned


class SuspiciousFilter(admin.SimpleListFilter):
    """Recovery points the anomaly check found unlike their history (catalog/anomaly.py)."""

    title = "anomaly"
    parameter_name = "suspicious"

    def lookups(self, request, model_admin):
        return (("yes", "Suspicious"), ("acknowledged", "Acknowledged as expected"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.suspicious()
        if self.value() == "acknowledged":
            return queryset.filter(anomaly_acknowledged_at__isnull=False)
        return queryset


@admin.register(Backup)
class BackupAdmin(NoAddMixin, NoDeleteMixin, CatalogAdmin):  # the retention flow owns deletion
    form = BackupAdminForm
    list_display = (
        "taken_at",
        "client",
        "level_display",
        "status",
        "size",
        "stored_size",
        "storage_target",
        "expires",
        "verification",
        "legal_hold",
        "suspicious_flag",
    )
    list_filter = (
        "status",
        "level",
        "verification",
        "legal_hold",
        SuspiciousFilter,
        "storage_target",
        "compression",
    )
    list_select_related = ("client__application", "storage_target")
    actions = ("acknowledge_anomaly",)
    search_fields = ("client__name", "=client__application__slug", "=sha256")
    search_help_text = "Client name, application slug (exact) or SHA-256 (exact)."
    date_hierarchy = "taken_at"
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("client", "job", "status", "taken_at", "expires_at", "deleted_at")}),
        ("Chain", {"fields": ("level", "base", "full", "chain")}),
        ("Legal hold", {"fields": ("legal_hold", "legal_hold_reason", "legal_hold_by", "legal_hold_at")}),
        ("Storage", {"fields": ("storage_target", "location", "size_bytes", "size", "stored_size_bytes",
                                "stored_size", "compression", "sha256", "manifest")}),
        ("Verification", {"fields": ("verified_at", "verification", "verification_job")}),
        ("File list", {"fields": ("index_entries", "index_kind", "index_size_bytes", "index_sha256")}),
        (
            "Anomaly check",
            {
                "fields": (
                    "anomaly_evidence",
                    "files_new",
                    "files_changed",
                    "files_deleted",
                    "anomaly_checked_at",
                    "anomaly_acknowledged_at",
                    "anomaly_acknowledged_by",
                    "anomaly_acknowledged_note",
                    "anomaly",
                )
            },
        ),
    )
    readonly_fields = (
        *(name for name in _all_field_names(Backup) if name not in BackupAdminForm.Meta.fields),
        "size",
        "stored_size",
        "chain",
        "anomaly_evidence",
    )

    @admin.action(description="Acknowledge anomaly as expected", permissions=["change"])
    def acknowledge_anomaly(self, request, queryset):
        """The backup team vouches for the selected suspicious points (e.g. after asking the owner)."""
        note = f"Expected: acknowledged by the backup team ({request.user}) in the admin."
        passed = mfa.session_passed_mfa(request)
        points = queryset.flagged()
        try:
            done = sum(
                anomalies.acknowledge(backup, by=request.user, note=note, mfa=passed) for backup in points
            )
        except MfaRequired as exc:  # raised before anything changes (the check comes first)
            self.message_user(request, mfa.refusal_html(str(exc), request.get_full_path()), messages.ERROR)
            return
        self.message_user(
            request,
            f"{done} suspicious backup(s) acknowledged as expected; their alerts are resolved."
            if done
            else "None of the selected backups is marked suspicious.",
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.display(description="suspicious", boolean=True)
    def suspicious_flag(self, obj):
        return obj.suspicious

    @admin.display(description="evidence")
    def anomaly_evidence(self, obj):
        summaries = (obj.anomaly or {}).get("summaries") or []
        if not summaries:
            return "Nothing unusual." if obj.anomaly_checked_at else "Not checked yet."
        state = "Acknowledged as expected" if obj.anomaly_acknowledged_at else "Suspicious"
        return format_html(
            "<p><strong>{}</strong>: unlike the client's history.</p><ul>{}</ul>",
            state,
            format_html_join("", "<li>{}</li>", ((line,) for line in summaries)),
        )

    # Legal hold is the one thing edited here, and it goes through catalog.services.retention:
    # holding an expired backup calls off its queued removal, and the service records who and when.
    def save_model(self, request, obj, form, change):
        was_held = form.initial.get("legal_hold", False)
        obj._legal_hold_change = ""
        touched = {"legal_hold", "legal_hold_reason"} & set(form.changed_data)
        if not touched or not (obj.legal_hold or was_held):
            return
        try:
            if obj.legal_hold:
                saved = retention.hold(obj.pk, by=request.user, reason=obj.legal_hold_reason)
                verb = "reason changed" if was_held else "set"
                obj._legal_hold_change = f"Legal hold {verb}: {saved.legal_hold_reason}"
            else:
                saved = retention.release(obj.pk, by=request.user)
                obj._legal_hold_change = "Legal hold released"
        except InvalidTransition as exc:
            # The form was valid but the backup moved on meanwhile (its removal started).
            obj._legal_hold_refused = str(exc)
            self.message_user(request, f"Legal hold not changed: {exc}", messages.ERROR)
            return
        for name in ("legal_hold", "legal_hold_reason", "legal_hold_by", "legal_hold_at", "status"):
            setattr(obj, name, getattr(saved, name))

    def construct_change_message(self, request, form, formsets, add=False):
        # A sentence, not the usual field list: the history page then reads the reason.
        return getattr(form.instance, "_legal_hold_change", "") or super().construct_change_message(
            request, form, formsets, add
        )

    def log_change(self, request, obj, message):
        if getattr(obj, "_legal_hold_refused", None):
            return None  # nothing changed
        return super().log_change(request, obj, message)

    def response_change(self, request, obj):
        if getattr(obj, "_legal_hold_refused", None):
            return HttpResponseRedirect(request.path)  # back to the form, with the error, no "changed"
        return super().response_change(request, obj)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return nowrap(human_size(obj.size_bytes))

    @admin.display(description="stored", ordering="stored_size_bytes")
    def stored_size(self, obj):
        return nowrap(human_size(obj.stored_size_bytes))

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj):
        return obj.expires_at.date()

    @admin.display(description="level", ordering="level")
    def level_display(self, obj):
        # base_id only: the column costs no query (no join either).
        if obj.level != BackupLevel.INCREMENTAL:
            return BackupLevel(obj.level).label
        url = reverse("admin:catalog_backup_change", args=[obj.base_id])
        return format_html('{}<a href="{}">#{}</a>', nowrap("Incremental on "), url, obj.base_id)

    @admin.display(description="chain")
    def chain(self, obj):
        """The chain up to this point (full → … → this point) and the later points that need it."""
        if obj.pk is None:
            return "—"
        members = [*chains.chain_of(obj), obj]
        dependents = list(levels.dependents_of(obj))
        found = chains.why_unrestorable(obj)  # None: restorable (restorable() decides)
        if found is None:
            verdict = format_html(
                "<p><strong>Restorable</strong>: {}</p>",
                "a full, it stands alone."
                if obj.level == BackupLevel.FULL
                else f"its chain of {len(members)} points is whole.",
            )
        else:
            own = found.member.pk == obj.pk
            why = found.why if own else f"chain broken: backup {found.member.pk} {found.why}"
            verdict = format_html('<p class="errornote"><strong>Not restorable</strong>: {}.</p>', why)
        parts = [verdict]
        if obj.level == BackupLevel.INCREMENTAL:
            needs = mark_safe("<p>Restoring it needs, oldest first:</p>")  # noqa: S308 (constant)
            parts += [needs, _chain_list(members, obj)]
        if dependents:
            needed = (
                "1 later point of the chain needs it: it stays until that one expires."
                if len(dependents) == 1
                else f"{len(dependents)} later points of the chain need it: it stays until they expire."
            )
            parts += [format_html("<p>{}</p>", needed), _chain_list(dependents, obj)]
        else:
            parts.append(mark_safe("<p>No later point builds on it.</p>"))  # noqa: S308 (constant)
        return format_html_join("", "{}", ((part,) for part in parts))


def _chain_list(points, current):
    """An ordered list of chain members, each linked to its page, ``current`` in bold."""
    items = []
    for point in points:
        facts = [point.taken_at.strftime("%Y-%m-%d %H:%M"), BackupStatus(point.status).label]
        if point.verification == Verification.FAILED:
            failed = '<strong style="color: var(--error-fg)">failed verification</strong>'
            facts.append(mark_safe(failed))  # noqa: S308 (constant)
        if point.legal_hold:
            facts.append("legal hold")
        label = levels.level_label(point)
        url = reverse("admin:catalog_backup_change", args=[point.pk])
        link = format_html('<a href="{}">#{}</a> {}', url, point.pk, label)
        if point.pk == current.pk:
            link = format_html("<strong>{} (this point)</strong>", link)
        items.append((link, format_html_join(" · ", "{}", ((fact,) for fact in facts))))
    return format_html('<ol class="chain">{}</ol>', format_html_join("", "<li>{} — {}</li>", items))


# --- Alerts ------------------------------------------------------------------------


class ResolvedFilter(admin.SimpleListFilter):
    # Not EmptyFieldListFilter: "Open" and "Resolved" say more than "Empty" and "Not empty".
    title = "open or resolved"
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return (("no", "Open"), ("yes", "Resolved"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(resolved_at__isnull=self.value() == "no")
        return queryset


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, CatalogAdmin):
    list_display = ("age", "severity", "kind", "summary", "subject", "is_open", "acknowledged")
    list_filter = (("acknowledged_at", admin.EmptyFieldListFilter), ResolvedFilter, "severity", "kind")
    list_select_related = ("application", "client__application", "agent", "storage_target", "acknowledged_by")
    search_fields = ("message", "key")
    date_hierarchy = "created_at"
    show_full_result_count = False
    # Unacknowledged first (NULL sorts first), then the most recently acknowledged.
    ordering = (F("acknowledged_at").desc(nulls_first=True), "-created_at")
    readonly_fields = _all_field_names(Alert)
    actions = ("acknowledge",)

    # Alerts are raised and resolved by the watches (read-only here); people only acknowledge
    # them, and who may is who could change an alert: CatalogAdmin's rule, past the mixin.
    def has_acknowledge_permission(self, request):
        return CatalogAdmin.has_change_permission(self, request)

    @admin.display(description="message")
    def summary(self, obj):
        return Truncator(obj.message).chars(80)

    @admin.display(description="raised", ordering="created_at")
    def age(self, obj):
        return nowrap(human_age(obj.created_at))

    @admin.display(description="about")
    def subject(self, obj):
        return obj.client or obj.agent or obj.storage_target or obj.application or "—"

    @admin.display(description="open", boolean=True, ordering="resolved_at")
    def is_open(self, obj):
        return obj.resolved_at is None

    @admin.display(description="acknowledged", ordering="acknowledged_at")
    def acknowledged(self, obj):
        if obj.acknowledged_at is None:
            return "—"
        return f"{obj.acknowledged_by} ({human_age(obj.acknowledged_at)})"

    @admin.action(description="Acknowledge", permissions=["acknowledge"])
    def acknowledge(self, request, queryset):
        acknowledged = alerts.acknowledge(queryset, by=request.user)
        self.message_user(request, f"Acknowledged {acknowledged} alert(s).", messages.SUCCESS)
