"""Template tags for request pages: status badges and the admin link for the backup team."""

from __future__ import annotations

from django import template
from django.urls import NoReverseMatch, reverse

from catalog.templatetags.portal_format import badge
from requests_app.choices import RequestStatus

register = template.Library()

REQUEST_TONES: dict[str, str] = {
    RequestStatus.SUBMITTED: "warn",
    RequestStatus.APPROVED: "info",
    RequestStatus.RUNNING: "info",
    RequestStatus.COMPLETED: "ok",
    RequestStatus.PROVISIONED: "ok",
    RequestStatus.FAILED: "fail",
    RequestStatus.REJECTED: "fail",
    RequestStatus.CANCELLED: "muted",
}


@register.simple_tag
def request_badge(request_obj):
    return badge(request_obj.get_status_display(), REQUEST_TONES.get(request_obj.status, "neutral"))


@register.simple_tag
def admin_change_url(obj) -> str:
    """The object's admin page, or the admin index while its model is not registered there."""
    try:
        return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return reverse("admin:index")


@register.filter
def waits_for_team(request_obj) -> bool:
    """Submitted and needing a person of the backup team to decide."""
    return request_obj.status == RequestStatus.SUBMITTED and request_obj.needs_approval
