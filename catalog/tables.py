"""django-tables2 tables of the owners' portal. Columns read annotated rows only: no query per row."""

from __future__ import annotations

import django_tables2 as tables
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from catalog import formatting
from catalog.choices import BackupLevel, BackupStatus, Verification
from catalog.models import Agent, Backup, BackupClient
from catalog.templatetags.portal_format import TONES, badge, rpo_badge

TABLE_TEMPLATE = "portal/table.html"
#: "12.0 MiB" and "2026-12-20" read badly broken over two lines in a wide table.
NOWRAP = {"td": {"class": "nowrap"}}


def _moment(value) -> str:
    return format_html(
        '<span title="{}">{}</span>', value.strftime("%Y-%m-%d %H:%M:%S %Z"), formatting.human_age(value)
    )


def _state(value, label) -> str:
    return badge(label, TONES.get(value, "neutral"))


class BackupTable(tables.Table):
    """A client's recovery points, newest first; restorable ones link to the restore form.

    Rows come annotated ``restorable`` (``catalog.levels.with_restorable``): an available
    incremental whose chain is broken says so instead of offering a restore that would be refused.
    """

    number = tables.Column(accessor="pk", verbose_name="Point", orderable=False)
    taken_at = tables.DateTimeColumn(verbose_name="Taken", format="Y-m-d H:i")
    age = tables.Column(accessor="taken_at", verbose_name="Age", orderable=False)
    level = tables.Column(verbose_name="Level", orderable=False)
    size_bytes = tables.Column(verbose_name="Size", attrs=NOWRAP)
    stored_size_bytes = tables.Column(verbose_name="Stored", attrs=NOWRAP)
    status = tables.Column()
    verification = tables.Column(verbose_name="Restore test", empty_values=())
    expires_at = tables.DateTimeColumn(verbose_name="Expires", format="Y-m-d", attrs=NOWRAP)
    files = tables.Column(accessor="index_entries", verbose_name="Files", orderable=False, empty_values=())
    restore = tables.Column(accessor="pk", verbose_name="", orderable=False, empty_values=())

    class Meta:
        model = Backup
        fields = (
            "number",
            "taken_at",
            "age",
            "level",
            "size_bytes",
            "stored_size_bytes",
            "status",
            "verification",
            "expires_at",
        )
        sequence = (*fields, "files", "restore")
        order_by = ("-taken_at",)
        template_name = TABLE_TEMPLATE
        attrs = {"class": "table"}
        empty_text = "No recovery points match."

    def render_number(self, value):
        return format_html('<span class="nowrap">#{}</span>', value)

    def render_age(self, value):
        return _moment(value)

    def render_level(self, record):
        # base_id only: no join, no query per row.
        if record.level != BackupLevel.INCREMENTAL:
            return BackupLevel(record.level).label
        return format_html(
            'Incremental <small class="muted nowrap" title="Builds on recovery point #{0}: restoring it '
            'needs that point and every one back to the full.">on #{0}</small>',
            record.base_id,
        )

    def render_size_bytes(self, value):
        return formatting.human_size(value)

    def render_stored_size_bytes(self, value):
        return formatting.human_size(value)

    def render_status(self, record):
        return _state(record.status, record.get_status_display())

    def render_verification(self, record):
        if not record.verification:
            return "—"
        return _state(record.verification, record.get_verification_display())

    def render_files(self, record):
        if not record.has_file_list:
            return mark_safe('<small class="muted nowrap">no file list</small>')  # noqa: S308 (constant)
        return format_html(
            '<a class="nowrap" href="{}">Browse files</a>',
            reverse("catalog:browse", args=[record.client_id, record.pk]),
        )

    def render_restore(self, record):
        if record.status != BackupStatus.AVAILABLE:
            return ""
        # A point that failed its own test keeps the link (the form says why not, as for a full).
        own_failure = record.verification == Verification.FAILED
        if record.level == BackupLevel.INCREMENTAL and not own_failure and not record.restorable:
            return format_html(
                '<span class="badge badge-fail nowrap" title="{}">chain broken</span>',
                "A point this incremental builds on is gone or failed its restore test, so it cannot "
                "be restored. Choose an older point, or a newer one of another chain.",
            )
        return format_html(
            '<a class="button button-small" href="{}">Restore…</a>',
            reverse("requests:restore", args=[record.pk]),
        )


class ClientTable(tables.Table):
    """An application's clients with their protection status (rows from ``protection.annotate_clients``)."""

    name = tables.Column(
        linkify=("catalog:client", {"pk": tables.A("pk")}),
        verbose_name="Client",
        attrs={"td": {"class": "nowrap"}},
    )
    hostname = tables.Column(verbose_name="Host")
    plugin = tables.Column()
    policy = tables.Column(accessor="policy__name", verbose_name="Policy")
    status = tables.Column()
    last_good_at = tables.Column(verbose_name="Last good backup", empty_values=())
    rpo = tables.Column(accessor="rpo_met", verbose_name="RPO", empty_values=())
    failures_recent = tables.Column(verbose_name="Failed jobs (7 d)")

    class Meta:
        model = BackupClient
        fields = ("name", "hostname", "plugin", "policy", "status", "last_good_at", "rpo", "failures_recent")
        orderable = False
        template_name = TABLE_TEMPLATE
        attrs = {"class": "table"}
        empty_text = "No clients yet."

    def render_plugin(self, record):
        return record.get_plugin_display()

    def render_policy(self, record):
        return format_html(
            '{} <small class="muted nowrap">RPO {} h</small>', record.policy.name, record.policy.rpo_hours
        )

    def render_status(self, record):
        return _state(record.status, record.get_status_display())

    def render_last_good_at(self, value):
        return _moment(value) if value else "never"

    def render_rpo(self, record):
        return rpo_badge(record)

    def render_failures_recent(self, value):
        return badge(value, "fail") if value else "0"


class AgentTable(tables.Table):
    """The agents serving an application."""

    hostname = tables.Column(verbose_name="Host")
    status = tables.Column(accessor="status", empty_values=())
    version = tables.Column()
    last_seen_at = tables.Column(verbose_name="Last poll", empty_values=())
    plugins = tables.Column(empty_values=())

    class Meta:
        model = Agent
        fields = ("hostname", "status", "version", "last_seen_at", "plugins")
        orderable = False
        template_name = TABLE_TEMPLATE
        attrs = {"class": "table"}
        empty_text = "No agent enrolled yet."

    def render_status(self, record):
        status = record.status
        return _state(status, status.label)

    def render_last_seen_at(self, value):
        return _moment(value) if value else "never"

    def render_plugins(self, value):
        return ", ".join(value) if value else "—"
