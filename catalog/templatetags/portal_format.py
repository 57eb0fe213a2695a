"""Template filters for the portal: human sizes and ages, status badges, who is on the backup team."""

from __future__ import annotations

from django import template
from django.utils import timezone
from django.utils.html import format_html

from catalog import formatting
from catalog.choices import AgentStatus, BackupStatus, ClientStatus, JobState, Verification
from catalog.tenancy import is_backup_team as _is_backup_team

register = template.Library()

#: Badge colour per catalog state; anything not listed is neutral.
TONES: dict[str, str] = {
    ClientStatus.ACTIVE: "ok",
    ClientStatus.PENDING_ENROLMENT: "warn",
    ClientStatus.PAUSED: "warn",
    ClientStatus.RETIRED: "muted",
    JobState.QUEUED: "info",
    JobState.RUNNING: "info",
    JobState.SUCCEEDED: "ok",
    JobState.FAILED: "fail",
    JobState.CANCELLED: "muted",
    BackupStatus.AVAILABLE: "ok",
    BackupStatus.EXPIRED: "muted",
    BackupStatus.DELETED: "muted",
    Verification.PASSED: "ok",
    AgentStatus.ONLINE: "ok",
    AgentStatus.SILENT: "fail",
    AgentStatus.NEVER_SEEN: "warn",
    AgentStatus.REVOKED: "muted",
}


@register.filter
def human_size(value):
    return formatting.human_size(value)


@register.filter
def human_age(value):
    return formatting.human_age(value)


@register.filter
def human_duration(value):
    return formatting.human_duration(value)


@register.filter
def age_title(value):
    """The exact moment, for a tooltip next to a human age."""
    if value is None:
        return ""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


@register.filter
def is_backup_team(user) -> bool:
    return _is_backup_team(user)


def badge(label, tone: str):
    return format_html('<span class="badge badge-{}">{}</span>', tone or "neutral", label)


@register.simple_tag
def status_badge(value, label=None, tones=None):
    """A coloured badge for a catalog state (``label`` defaults to the value)."""
    return badge(label if label is not None else value, (tones or TONES).get(value, "neutral"))


@register.simple_tag
def rpo_badge(client):
    """For a client annotated by ``catalog.protection``; only active clients are held to their RPO."""
    if client.status != ClientStatus.ACTIVE:
        return badge(f"Not measured ({client.get_status_display().lower()})", "muted")
    if client.rpo_met:
        return badge("RPO met", "ok")
    return badge("RPO missed" if client.last_good_at else "No backup yet", "fail")
