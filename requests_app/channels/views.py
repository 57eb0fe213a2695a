"""The application page's "Notifications": its channels, add one, remove one, send a test message.

Who manages an application's channels is who may see the application
(``visible_to``: its owners and the backup team); anybody else gets a 404, for
the application and for each of its channels. Every change is a POST (CSRF).
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog.models import Application
from requests_app.channels.forms import ChannelForm, topics_of
from requests_app.models import DeliveryStatus, WebhookDelivery, WebhookSubscription
from requests_app.webhooks import chat, destinations, dispatch

log = logging.getLogger(__name__)


def _application(request: HttpRequest, slug: str) -> Application:
    return get_object_or_404(Application.objects.visible_to(request.user), slug=slug)


def _channel(application: Application, pk: int) -> WebhookSubscription:
    return get_object_or_404(WebhookSubscription.objects.filter(application=application), pk=pk)


@login_required
def channels(request: HttpRequest, slug: str) -> HttpResponse:
    """The list, and the form that adds a channel (POST)."""
    application = _application(request, slug)
    form = ChannelForm(request.POST or None, application=application)
    if request.method == "POST" and form.is_valid():
        channel = form.save()
        # Never the URL: it is the channel's credential.
        log.info(
            "channel %s (%s) of %s added by %s", channel.pk, channel.format, application.slug, request.user
        )
        messages.success(request, f"Channel “{channel.name}” added. Send it a test message to check it.")
        return redirect("requests:channels", slug=application.slug)
    return render(
        request,
        "requests_app/channels.html",
        {"application": application, "form": form, "channels": _rows(application)},
        status=400 if form.is_bound else 200,
    )


@login_required
@require_POST
def channel_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    application = _application(request, slug)
    channel = _channel(application, pk)
    channel.delete()  # its deliveries and attempts with it
    log.info("channel %s of %s removed by %s", pk, application.slug, request.user)
    messages.success(request, f"Channel “{channel.name}” removed.")
    return redirect("requests:channels", slug=application.slug)


@login_required
@require_POST
def channel_test(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    application = _application(request, slug)
    channel = _channel(application, pk)
    body = chat.render(channel.format, chat.test_message(application))
    dispatch.queue(chat.TEST_EVENT, [(channel, body)])
    messages.success(request, f"Test message queued for “{channel.name}”: it arrives within a minute.")
    return redirect("requests:channels", slug=application.slug)


def _rows(application: Application) -> list[dict]:
    """The channels with their latest delivery's outcome: one query, whatever their number."""
    latest = WebhookDelivery.objects.filter(subscription=OuterRef("pk")).order_by("-created_at", "-pk")
    channels = (
        WebhookSubscription.objects.filter(application=application)
        .annotate(
            failed_count=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.FAILED)),
            last_delivered_at=Max("deliveries__delivered_at"),
            last_status=Subquery(latest.values("status")[:1]),
            last_error=Subquery(latest.values("last_error")[:1]),
        )
        .order_by("name", "pk")
    )
    return [
        {
            "channel": channel,
            "destination": ", ".join(channel.recipients) or destinations.masked_url(channel.url),
            "topics": topics_of(channel.event_types),
        }
        for channel in channels
    ]
