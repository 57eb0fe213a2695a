"""Application channels end to end: real POSTs to a local receiver, retries, e-mail, tenancy, the admin."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from catalog.choices import AlertKind, AlertSeverity
from catalog.services import alerts
from requests_app.choices import RequestStatus
from requests_app.models import DeliveryStatus, WebhookDelivery, WebhookFormat, WebhookSubscription
from requests_app.webhooks import Event, chat, delivery, destinations, dispatch
from tests import factories
from tests.requests.factories import submit_restore
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_chat_bodies import check_slack_shape, check_teams_shape

ALERTS = [Event.ALERT_RAISED]
REQUESTS = [Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED]


@pytest.fixture(autouse=True)
def local_receivers_allowed(settings):
    """The receivers listen on 127.0.0.1: a private address, refused unless the setting allows it."""
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def teams_receiver():
    with Receiver() as running:
        yield running


def channel(application, fmt: str, *, url: str = "", events=ALERTS, **fields) -> WebhookSubscription:
    fields.setdefault("name", f"{application.slug} {fmt}")
    sub = WebhookSubscription(
        application=application,
        format=fmt,
        url=url,
        event_types=list(events),
        secret="whsec_channel-secret-0123456789",
        **fields,
    )
    sub.full_clean()
    sub.save()
    return sub


def raise_failure(client, message: str = "Backup failed: disk full"):
    return alerts.raise_client_alert(AlertKind.JOB_FAILED, AlertSeverity.CRITICAL, client, message)


def test_an_alert_of_an_application_is_posted_to_its_slack_channel(
    mine, receiver, django_capture_on_commit_callbacks
):
    slack = channel(mine.client.application, WebhookFormat.SLACK, url=receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_failure(mine.client)

    [request] = receiver.received
    row = WebhookDelivery.objects.get(subscription=slack)
    assert request.body == row.body.encode()  # exactly what is stored (and shown in the admin)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Portal-Event"] == Event.ALERT_RAISED
    body = json.loads(request.body)
    check_slack_shape(body)
    headline = f":red_circle: *Critical: Job failed in Orders*\n{alert.message}"
    assert body["blocks"][0]["text"]["text"] == headline
    assert body["blocks"][-1]["elements"][0]["url"].endswith("/alerts/?application=orders")
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)


def test_a_request_update_is_posted_to_the_teams_channel(
    owner, backup_admin, mine, teams_receiver, django_capture_on_commit_callbacks
):
    teams = channel(mine.client.application, WebhookFormat.TEAMS, url=teams_receiver.url, events=REQUESTS)

    with django_capture_on_commit_callbacks(execute=True):
        request = submit_restore(owner, backup=mine.backup)

    [received] = teams_receiver.received
    card = check_teams_shape(json.loads(received.body))
    assert card["body"][0]["text"] == f"Restore request #{request.pk} for {mine.client.name}: submitted"
    assert card["actions"][0]["url"].endswith(f"/requests/restore/{request.pk}/")
    [row] = WebhookDelivery.objects.filter(subscription=teams)
    assert (row.event, row.status) == (Event.RESTORE_REQUEST_CHANGED, DeliveryStatus.DELIVERED)


def test_a_500_is_retried_then_delivered_and_the_admin_shows_both_attempts(
    mine, receiver, team_client, django_capture_on_commit_callbacks
):
    slack = channel(mine.client.application, WebhookFormat.SLACK, url=receiver.url)
    receiver.fail_first(1, status=500)

    with django_capture_on_commit_callbacks(execute=True):
        raise_failure(mine.client)

    row = WebhookDelivery.objects.get(subscription=slack)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.PENDING, 1, 500)
    assert delivery.retry_due(now=timezone.now() + timedelta(minutes=1)) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 2, 200)
    first, second = receiver.received
    assert first.body == second.body == row.body.encode()
    assert first.headers["X-Portal-Delivery"] == second.headers["X-Portal-Delivery"]

    page = team_client.get(reverse("admin:requests_app_webhookdelivery_change", args=[row.pk])).text
    assert "HTTP 500" in page and "Delivered" in page
    assert "Job failed in Orders" in page  # the body as sent
    changelist = team_client.get(reverse("admin:requests_app_webhooksubscription_changelist"))
    text = changelist.text
    assert "Slack incoming webhook" in text and "application orders" in text
    assert receiver.url not in text and destinations.masked_url(receiver.url) in text


def test_an_e_mail_channel_mails_its_addresses_through_the_same_deliveries(
    mine, django_capture_on_commit_callbacks
):
    addresses = "oncall@orders.example.com, lead@orders.example.com"
    by_mail = channel(mine.client.application, WebhookFormat.EMAIL, email_to=addresses)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        raise_failure(mine.client)

    [sent] = [m for m in mail.outbox if m.to == ["oncall@orders.example.com", "lead@orders.example.com"]]
    assert sent.subject == "[Backup Portal] Critical: Job failed in Orders"
    assert "Open in the portal: http" in sent.body and "/alerts/?application=orders" in sent.body
    row = WebhookDelivery.objects.get(subscription=by_mail)
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 1)


def test_a_channel_hears_only_its_own_applications_events(
    owner, mine, theirs, receiver, teams_receiver, django_capture_on_commit_callbacks
):
    mine_slack = channel(mine.client.application, WebhookFormat.SLACK, url=receiver.url, events=ALERTS)
    theirs_teams = channel(
        theirs.client.application, WebhookFormat.TEAMS, url=teams_receiver.url, events=[*ALERTS, *REQUESTS]
    )

    with django_capture_on_commit_callbacks(execute=True):
        raise_failure(theirs.client, "Payroll backup failed")
        # Shared infrastructure: an alert of no application reaches no application's channel.
        alerts.raise_alert(
            kind=AlertKind.AGENT_SILENT, severity=AlertSeverity.CRITICAL, key="shared:1", message="quiet"
        )
        submit_restore(owner, backup=mine.backup)  # orders' request; orders' channel takes alerts only

    assert receiver.received == []
    assert not WebhookDelivery.objects.filter(subscription=mine_slack).exists()
    [received] = teams_receiver.received
    assert "Payroll backup failed" in received.body.decode()
    assert WebhookDelivery.objects.filter(subscription=theirs_teams).count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        raise_failure(mine.client, "Orders backup failed")
    [received] = receiver.received
    assert "Orders backup failed" in received.body.decode()
    assert len(teams_receiver.received) == 1


def test_the_backup_teams_own_slack_channel_hears_every_application(
    mine, theirs, receiver, django_capture_on_commit_callbacks
):
    team = WebhookSubscription.objects.create(
        name="#backup-oncall",
        format=WebhookFormat.SLACK,
        url=receiver.url,
        event_types=ALERTS,
        secret="s" * 20,
    )
    with django_capture_on_commit_callbacks(execute=True):
        raise_failure(mine.client)
        raise_failure(theirs.client)
    assert WebhookDelivery.objects.filter(subscription=team).count() == 2
    assert len(receiver.received) == 2


def test_a_private_address_is_refused_when_sending_unless_allowed(
    settings, mine, receiver, django_capture_on_commit_callbacks
):
    slack = channel(mine.client.application, WebhookFormat.SLACK, url=receiver.url)
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = False

    with django_capture_on_commit_callbacks(execute=True):
        raise_failure(mine.client)

    assert receiver.received == []
    row = WebhookDelivery.objects.get(subscription=slack)
    assert row.status == DeliveryStatus.PENDING and row.last_error.startswith("Refused:")
    assert receiver.url not in row.last_error


def test_the_chat_body_is_rendered_once_per_format(mine, receiver, teams_receiver, subscribe):
    """Two Slack channels share one body; the integrations' signed JSON is its own."""
    application = mine.client.application
    channel(application, WebhookFormat.SLACK, url=receiver.url)
    channel(application, WebhookFormat.SLACK, url=receiver.url, name="second")
    channel(application, WebhookFormat.TEAMS, url=teams_receiver.url)
    subscribe(receiver.url, event_types=ALERTS)
    alert = factories.AlertFactory(client=mine.client)

    rows = dispatch.alert_raised(alert.pk)
    by_format: dict[str, set[str]] = {}
    for row in rows:
        by_format.setdefault(row.subscription.format, set()).add(row.body)
    assert {fmt: len(bodies) for fmt, bodies in by_format.items()} == {"slack": 1, "teams": 1, "portal": 1}
    assert json.loads(by_format["portal"].pop())["event"] == Event.ALERT_RAISED
    msg = chat.message(Event.ALERT_RAISED, alert)
    assert json.loads(by_format["slack"].pop()) == json.loads(chat.render(WebhookFormat.SLACK, msg))


def test_a_new_request_is_announced_as_new(owner, mine, receiver, django_capture_on_commit_callbacks):
    channel(mine.client.application, WebhookFormat.SLACK, url=receiver.url, events=REQUESTS)
    with django_capture_on_commit_callbacks(execute=True):
        submit_restore(owner, backup=mine.backup)
    [received] = receiver.received
    request = mine.backup.restore_requests.get()
    title = f"Restore request #{request.pk} for {mine.client.name}: submitted"
    assert json.loads(received.body)["text"] == f"{title}: New request"
    assert request.status == RequestStatus.SUBMITTED


def test_a_chat_channel_saved_without_events_never_gets_job_changes(mine, receiver):
    """Stored past the model's checks (a script, an old row): job.changed has no chat message, so none."""
    slack = WebhookSubscription.objects.create(
        application=mine.client.application,
        name="all",
        format=WebhookFormat.SLACK,
        url=receiver.url,
        secret="s" * 20,
    )

    assert dispatch.job_changed(factories.JobFactory(client=mine.client).pk, "queued", "running") == []
    assert not dispatch.anyone_wants(Event.JOB_CHANGED)
    assert len(dispatch.alert_raised(factories.AlertFactory(client=mine.client).pk)) == 1
    assert slack.deliveries.count() == 1


def test_a_public_name_that_resolves_inside_is_refused_at_send_time(settings, monkeypatch):
    """Checked again when sending: a name saved as public may since point at the portal's own network."""
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = False
    answer = {"address": "10.0.0.7"}

    def resolve(host, port, **kwargs):
        return [(2, 1, 6, "", (answer["address"], port))]

    monkeypatch.setattr(destinations.socket, "getaddrinfo", resolve)
    slack_url = "https://hooks.slack.com/services/T0/B0/x"
    assert destinations.refusal(slack_url).startswith("Refused")
    answer["address"] = "::ffff:169.254.169.254"
    assert destinations.refusal(slack_url).startswith("Refused")
    answer["address"] = "34.1.2.3"
    assert destinations.refusal(slack_url) == ""
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = True
    answer["address"] = "127.0.0.1"
    assert destinations.refusal(slack_url) == ""


def test_a_name_that_does_not_resolve_is_refused_not_sent(settings, monkeypatch):
    """Letting it through would have urllib resolve it again, to wherever it points by then."""
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = False

    def fail(host, port, **kwargs):
        raise socket.gaierror("temporary failure in name resolution")

    monkeypatch.setattr(destinations.socket, "getaddrinfo", fail)
    assert destinations.refusal("https://hooks.slack.com/services/T0/B0/x").startswith("Refused")
    monkeypatch.setattr(destinations.socket, "getaddrinfo", lambda host, port, **kwargs: [])
    assert destinations.refusal("https://hooks.slack.com/services/T0/B0/x").startswith("Refused")


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:7",  # NAT64 of 10.0.0.7
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a00:7::1",  # 6to4 of 10.0.0.7
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "::ffff:192.168.1.1",
    ],
)
def test_an_address_carrying_a_private_ipv4_is_refused(settings, monkeypatch, address):
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(
        destinations.socket, "getaddrinfo", lambda host, port, **kwargs: [(10, 1, 6, "", (address, port))]
    )
    assert destinations.refusal("https://example.webhook.office.com/x").startswith("Refused")
    assert destinations.refusal(f"https://[{address}]/x").startswith("Refused")


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1"])
def test_nat64_and_6to4_literals_are_refused_even_of_a_public_address(settings, monkeypatch, address):
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(
        destinations.socket, "getaddrinfo", lambda host, port, **kwargs: [(10, 1, 6, "", (address, port))]
    )
    assert destinations.refusal(f"https://[{address}]/x").startswith("Refused")
    # Resolved from a name (a DNS64 network), one carrying a public IPv4 address is a public address.
    assert destinations.refusal("https://example.webhook.office.com/x") == ""
    with pytest.raises(ValidationError):
        destinations.validate(f"https://[{address}]/x", WebhookFormat.TEAMS)
